"""Experiment A: is Z causal? Activation patching of Z, Z⊥ and everything (seed 000).

Notation
--------
Problem ``i`` is posed in a *target* language (``en`` for the primary
direction ``en<-zh``) and a *source* language (``zh``). At decoder layer ``l``
(output = hidden-state index ``l + 1``) let ``h_tgt[t]`` (``t`` over the target
prompt's real, non-special tokens) be the live hidden states of the target
forward pass and ``h_src[s]`` the source prompt's stored states
(:meth:`zhunt.data.store.ActivationStore.tokens`, special tokens dropped with
:meth:`~zhunt.data.store.ActivationStore.token_mask`). ``V_Z`` (k, d) is the layer's
Z-mask (:func:`zhunt.weights.masks.read_mask`), ``P_Z = V_Z^T V_Z``, ``P_Z⊥ = I - P_Z``.

Source per target position (``alignment``)
    ``"mean"`` (mean-broadcast):  ``z(t) = z̄_src = (1/T_src) Σ_s h_src[s]`` for every t.
    ``"ot"`` (per-token OT): cost ``C[s, t] = ||h_src[s] - h_tgt[t]||²`` (the
    target cloud from the store too: the same clean states the live forward
    produces), uniform marginals ``a = 1/T_src``, ``b = 1/T_tgt``, exact plan
    ``π* = argmin_{π ∈ Π(a, b)} <π, C>`` (:func:`ot.emd`; Sinkhorn optional,
    :func:`ot_plan`), and ``z(t) = Σ_s (π*[s, t] / b_t) h_src[s]``. Averaged
    over ``t`` this is exactly ``z̄_src``.

Conditions (applied to every real non-special target prompt position at
prefill; the KV cache carries the change to the generated tokens; pads are
never touched; ``patch_generated=True`` also patches every generated position
with ``z̄_src``)

=============  ==========================================================
``none``       the target prompt, unpatched (baseline)
``z``          ``h[t] <- P_Z⊥ h[t] + P_Z z(t)``   (replace Z-content)
``zperp``      ``h[t] <- P_Z h[t] + P_Z⊥ z(t)``   (replace the Z⊥ "language scaffold")
``full``       ``h[t] <- z(t)``
``random``     the ``z`` formula with ``V_R`` a Haar-random k-dim subspace
               (:func:`zhunt.subspace.random_subspace`, seed ``(seed, k, r)``,
               ``r = 0..n_random-1``: the same subspaces at every layer and
               alignment)
=============  ==========================================================

Batching: one :func:`zhunt.models.generation.generate` call per configuration over
every (problem, condition) row; the unpatched baseline does not depend on the
layer, k or alignment, so it is generated once per target language and copied
into every configuration's records.

Note: as in the seed, the source is the *same* problem in the other language,
so the key answer does not change; an answer change therefore measures how much
a patch disrupts (or re-routes) the computation, not a transfer to a different
ground truth.

Source problem (``source``, see ``docs/patching.md``)
    ``"same"`` (the seed's design): ``z̄_src`` / the OT cloud of problem ``i``
    itself in the source language. ``"donor"`` (the corrected design): the
    source-language states of a DIFFERENT problem ``d(i)``
    (:func:`donor_map`: the next problem, in a permutation seeded with
    ``seed``, whose key answer differs from ``answer(i)``; so ``d(i) != i``
    and ``answer(d(i)) != answer(i)``), with the same formulas (mean-broadcast
    of the donor's mean; OT between the donor's cloud and the target's). If Z
    carries the problem, the Z-patch should make the model answer the
    *donor's* question: :func:`donor_metrics` measures the answer *transfer*
    rate (patched answer == the donor's key answer) and the *kept* rate
    (== the own unpatched answer) per condition, and :func:`donor_verdict`
    judges them (:func:`donor_verdict_caption`).

Scoring of each generation: :func:`zhunt.data.answers.extract_answer` (language of the
output script: ``zh`` for Chinese output, the target language for Latin
output, all languages for mixed output), ``correct`` against the key,
:func:`zhunt.data.language_id.classify_language` and :func:`~zhunt.data.language_id.cjk_fraction`.
An *answer change* is ``extracted != extracted(none)`` on the same problem (no
answer vs an answer counts as a change; no answer twice does not). Language
*preserved* means the output is classified as the target language (``en`` =
Latin script); otherwise it is *disrupted*.

Derived metrics per configuration (layer, k, alignment, direction), each a
rate over the ``N`` problems with a percentile bootstrap 95% CI
(:func:`zhunt.stats.rate_ci`, 2000 resamples, fixed seed): Z / Z⊥ / full
answer-change rates, Z language preservation, Z⊥ and Z language disruption,
full-patch answer agreement with the Z- and with the Z⊥-patch, and the random
control's answer-change and language-preservation rates (per problem the
fraction of the ``n_random`` subspaces, then the mean over problems with its
CI). Paired tests: exact McNemar of Z vs Z⊥ answer changes and language
disruptions; paired bootstrap CI of ``change_Z - change_random`` per problem.

The verdict (:func:`config_verdict`, thresholds in the module constants,
:func:`verdict_caption` states them) makes the seed's criteria precise:

* **A** "Z changes answers more than Z⊥": ``rate_Z > rate_Z⊥`` and
  (McNemar ``p < ALPHA`` or ``CI_lo(Z) > CI_hi(Z⊥)``);
* **R** "Z beats random": the paired bootstrap CI of
  ``change_Z - change_random`` lies above 0;
* **L1** Z preserves language: preservation rate ``>= MIN_Z_LANGUAGE_PRESERVATION``;
* **L2** Z⊥ disrupts language: ``disruption_Z⊥ > disruption_Z`` and (McNemar
  ``p < ALPHA`` or ``CI_lo(Z⊥) > CI_hi(Z)``);
* **K** Z⊥ keeps answers: answer-change rate of Z⊥ ``<= MAX_ZPERP_ANSWER_CHANGE``.

``double dissociation`` iff A, R, L1, L2 and K; ``partial success`` iff A and R
(not all of L1, L2, K); ``reverse`` iff Z⊥ changes answers more than Z under
the mirror of A; ``null`` otherwise (including A without R: Z is then no
better than a random subspace of the same dimension).
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.errors import ZhuntError
from zhunt.experiments.patching_thresholds import (ALPHA, MAX_ZPERP_ANSWER_CHANGE, MIN_DONOR_Z_LANGUAGE_PRESERVATION,
                                                   MIN_Z_LANGUAGE_PRESERVATION, N_BOOTSTRAP)
from zhunt.experiments.patching_thresholds import GRID_VERDICTS as VERDICTS
from zhunt.stats import bootstrap_ci, mcnemar_exact
from zhunt.data.answers import extract_answer
from zhunt.data.language_id import SUPPORTED_LANGUAGES, cjk_fraction, classify_language

__all__ = [
    "CONDITIONS", "DIRECTIONS", "ALIGNMENTS", "ALPHA", "MIN_Z_LANGUAGE_PRESERVATION",
    "MAX_ZPERP_ANSWER_CHANGE", "N_BOOTSTRAP", "SINKHORN_REG", "VERDICTS",
    "parse_direction", "direction_slug", "ot_plan", "ot_sources", "mean_source", "patch_rows",
    "random_bases", "score_text", "config_metrics", "config_verdict", "overall_verdict",
    "verdict_caption", "check_grid", "grid_context", "check_store", "baseline_records", "config_sources",
    "config_records", "config_result", "grid_configs",
    "SOURCES", "MIN_DONOR_Z_LANGUAGE_PRESERVATION", "donor_map", "donor_metrics", "donor_verdict",
    "donor_verdict_caption",
]

log = logging.getLogger("zhunt.experiments.patching")

#: Conditions of every configuration (``random`` is repeated over the random subspaces).
CONDITIONS = ("none", "z", "zperp", "full", "random")
#: Supported directions ``"target<-source"``.
DIRECTIONS = ("en<-zh", "zh<-en")
#: Source alignments.
ALIGNMENTS = ("mean", "ot")

#: Entropic regularisation of the Sinkhorn option (cost normalised by its maximum first).
SINKHORN_REG = 0.05

#: Source problems: ``same`` = the seed's design (the same problem in the source language),
#: ``donor`` = the corrected design (a different problem with a different answer).
SOURCES = ("same", "donor")


# ------------------------------------------------------------------------------------ helpers
def parse_direction(direction: str) -> tuple[str, str]:
    """``"en<-zh"`` -> ``("en", "zh")`` (target, source)."""
    parts = str(direction).replace("←", "<-").split("<-")
    if len(parts) != 2 or not all(p in SUPPORTED_LANGUAGES for p in parts) or parts[0] == parts[1]:
        raise ZhuntError("patching.directions", f"bad direction {direction!r}: expected 'target<-source' "
                         f"with two different languages of {SUPPORTED_LANGUAGES}, e.g. 'en<-zh'")
    return parts[0], parts[1]


def direction_slug(direction: str) -> str:
    """File-name form of a direction: ``"en<-zh"`` -> ``"en-from-zh"``."""
    t, s = parse_direction(direction)
    return f"{t}-from-{s}"


def _arrow(direction: str) -> str:
    t, s = parse_direction(direction)
    return f"{t}←{s}"


def ot_plan(X_src: np.ndarray, X_tgt: np.ndarray, *, sinkhorn: bool = False,
            reg: float = SINKHORN_REG) -> np.ndarray:
    """Optimal transport plan between two token clouds with uniform marginals.

    Parameters
    ----------
    X_src : ndarray of shape (T_src, d)
    X_tgt : ndarray of shape (T_tgt, d)
        Hidden states (special tokens and pads already removed).
    sinkhorn : bool
        Entropic OT (:func:`ot.sinkhorn`, regularisation ``reg`` on the cost
        divided by its maximum, which keeps ``exp(-C/reg)`` finite) instead of
        the exact plan (:func:`ot.emd`).

    Returns
    -------
    ndarray of shape (T_src, T_tgt), float64
        ``π*`` with ``π* 1 = a = 1/T_src`` and ``π*^T 1 = b = 1/T_tgt``
        (exactly for ``ot.emd``, to Sinkhorn's tolerance otherwise), minimising
        ``Σ_st π[s, t] ||X_src[s] - X_tgt[t]||²``.
    """
    import ot

    Xs = np.asarray(X_src, dtype=np.float64)
    Xt = np.asarray(X_tgt, dtype=np.float64)
    if Xs.ndim != 2 or Xt.ndim != 2 or Xs.shape[1] != Xt.shape[1] or not len(Xs) or not len(Xt):
        raise ValueError(f"token clouds must be non-empty (T, d) arrays, got {Xs.shape} and {Xt.shape}")
    a = np.full(len(Xs), 1.0 / len(Xs))
    b = np.full(len(Xt), 1.0 / len(Xt))
    C = ot.dist(Xs, Xt, metric="sqeuclidean")
    if sinkhorn:
        cmax = C.max()
        return ot.sinkhorn(a, b, C / cmax if cmax > 0 else C, reg, numItermax=100000, stopThr=1e-12)
    return ot.emd(a, b, C, numItermax=1_000_000)


def ot_sources(X_src: np.ndarray, X_tgt: np.ndarray, *, sinkhorn: bool = False) -> np.ndarray:
    """Transport-weighted source per target token: ``z(t) = Σ_s (π*[s, t] / b_t) X_src[s]``.

    Returns
    -------
    ndarray of shape (T_tgt, d), float64
        (``b_t = 1/T_tgt``; the mean over ``t`` equals the source mean.)
    """
    pi = ot_plan(X_src, X_tgt, sinkhorn=sinkhorn)
    b = pi.sum(axis=0) if sinkhorn else np.full(pi.shape[1], 1.0 / pi.shape[1])
    return (pi / b[None, :]).T @ np.asarray(X_src, dtype=np.float64)


def mean_source(X_src: np.ndarray) -> np.ndarray:
    """``z̄ = (1/T) Σ_s X_src[s]``, shape (d,), float64."""
    return np.asarray(X_src, dtype=np.float64).mean(axis=0)


def random_bases(k: int, d: int, n_random: int, seed: int = 0) -> list[np.ndarray]:
    """``n_random`` Haar-random (k, d) bases; base ``r`` uses the generator seeded with ``(seed, k, r)``."""
    from zhunt.experiments.patching_design import pair_bases

    return [pair_bases(k, d, r, seed) for r in range(n_random)]


def patch_rows(problems: Sequence[str], sources: Mapping[str, np.ndarray], V_Z, random_V: Sequence,
               ) -> tuple[list[dict], list]:
    """Rows (problem x condition) and their :class:`zhunt.models.generation.SubspaceEdit` edits.

    Parameters
    ----------
    problems : sequence of str
        Problem ids, in order.
    sources : mapping
        ``problem -> z`` of shape ``(d,)`` (mean) or ``(T_tgt, d)`` (OT).
    V_Z : (k, d)
        The Z-basis (array or tensor).
    random_V : sequence of (k, d)
        Random bases of the control.

    Returns
    -------
    rows : list of dict
        ``problem, condition, subspace`` (``-1`` except for ``random``: its index).
    edits : list
        ``None`` for ``none``, else the condition's edit.
    """
    import torch

    from zhunt.models.generation import SubspaceEdit

    Vz = torch.as_tensor(np.asarray(V_Z, dtype=np.float32))
    Vr = [torch.as_tensor(np.asarray(V, dtype=np.float32)) for V in random_V]
    rows, edits = [], []
    for pid in problems:
        src = torch.as_tensor(np.asarray(sources[pid], dtype=np.float32))
        spec = [("none", -1, None), ("z", -1, SubspaceEdit(Vz, src, "span")),
                ("zperp", -1, SubspaceEdit(Vz, src, "complement")), ("full", -1, SubspaceEdit(None, src, "full"))]
        spec += [("random", r, SubspaceEdit(V, src, "span")) for r, V in enumerate(Vr)]
        for cond, r, e in spec:
            rows.append({"problem": pid, "condition": cond, "subspace": r})
            edits.append(e)
    return rows, edits


def _answer_lang(output_lang: str, target: str) -> str | None:
    if output_lang == "zh":
        return "zh"
    if output_lang == "en":
        return target if target != "zh" else "en"
    return None


def score_text(text: str, answer: int, target: str) -> dict:
    """Score one generation: ``extracted``, ``correct``, ``output_lang``, ``cjk_fraction``, ``language_preserved``."""
    out_lang = classify_language(text)
    ans = extract_answer(text, _answer_lang(out_lang, target))
    return {"extracted": ans, "correct": ans is not None and ans == int(answer), "output_lang": out_lang,
            "cjk_fraction": cjk_fraction(text), "language_preserved": out_lang == (target if target == "zh" else "en")}


# ------------------------------------------------------------------------------------ metrics
def _same(a, b) -> np.ndarray:
    """Element-wise equality of two answer columns where NA == NA counts as equal."""
    a = pd.Series(a, dtype="Int64").reset_index(drop=True)
    b = pd.Series(b, dtype="Int64").reset_index(drop=True)
    eq = (a == b).fillna(False).to_numpy(bool)
    return eq | (a.isna() & b.isna()).to_numpy(bool)



def _put_mcnemar(out: dict, name: str, a, b) -> None:
    """Store the exact McNemar test of paired booleans ``a`` vs ``b`` as ``mcnemar_{name}_{p,n01,n10}``."""
    m = mcnemar_exact(a, b)
    out.update({f"mcnemar_{name}_p": m["p"], f"mcnemar_{name}_n01": m["n01"], f"mcnemar_{name}_n10": m["n10"]})


def _baseline(records: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """The ``none`` rows indexed by problem, and the problems in their order."""
    base = records[records["condition"] == "none"].set_index("problem")
    problems = list(base.index)
    if not problems:
        raise ValueError("no baseline ('none') records")
    return base, problems


def _condition(records: pd.DataFrame, name: str, problems: Sequence[str]) -> pd.DataFrame:
    """The rows of condition ``name`` indexed by problem, in ``problems`` order (every problem required)."""
    c = records[records["condition"] == name].set_index("problem")
    missing = set(problems) - set(c.index)
    if missing:
        raise ValueError(f"condition {name!r} lacks problems {sorted(missing)[:3]}")
    return c.loc[problems]


def _put_rate(out: dict, name: str, flags, kw: Mapping) -> None:
    """``out[name], out[name_lo], out[name_hi]``: the rate of ``flags`` with its percentile bootstrap CI
    (:func:`zhunt.experiments.patching_metrics.rate`, ``method="bootstrap"``; fractions allowed)."""
    from zhunt.experiments.patching_metrics import rate

    out[name], out[f"{name}_lo"], out[f"{name}_hi"], _ = rate(flags, method="bootstrap", **kw)


def _put_difference(out: dict, name: str, diff, kw: Mapping) -> None:
    """The paired bootstrap estimate and CI of a per-problem difference."""
    out[name], out[f"{name}_lo"], out[f"{name}_hi"] = bootstrap_ci(diff, **kw)


def _put_missing(out: dict, names: Sequence[str]) -> None:
    for name in names:
        out[name] = out[f"{name}_lo"] = out[f"{name}_hi"] = float("nan")


def config_metrics(records: pd.DataFrame, *, seed: int = 0, n_resamples: int = N_BOOTSTRAP) -> dict:
    """Derived metrics of one configuration from its records.

    Parameters
    ----------
    records : pandas.DataFrame
        The rows of ONE configuration: ``problem, condition, subspace,
        extracted, language_preserved`` (one ``none``, ``z``, ``zperp``,
        ``full`` row per problem and ``n_random >= 0`` ``random`` rows).

    Returns
    -------
    dict
        For each rate ``name``: ``name`` (point estimate), ``name_lo``,
        ``name_hi``. Rates: ``z_answer_change``, ``zperp_answer_change``,
        ``full_answer_change``, ``z_language_preservation``,
        ``z_language_disruption``, ``zperp_language_disruption``,
        ``full_language_disruption``, ``full_agree_z``, ``full_agree_zperp``,
        ``random_answer_change``, ``random_language_preservation``,
        ``z_minus_random_answer_change`` (paired); plus ``n_problems``,
        ``n_random``, McNemar ``mcnemar_answer_p/_n01/_n10`` (Z vs Z⊥ answer
        change; n01 = only Z changed) and ``mcnemar_language_p/_n01/_n10``
        (Z⊥ vs Z disruption; n01 = only Z⊥ disrupted), ``full_like``
        (``"Z"``, ``"Z⊥"`` or ``"tie"``).
    """
    kw = dict(seed=seed, n_resamples=n_resamples)
    base, problems = _baseline(records)
    z, zp, full = (_condition(records, c, problems) for c in ("z", "zperp", "full"))
    b_ans = base["extracted"]
    ch = {n: ~_same(c["extracted"], b_ans) for n, c in (("z", z), ("zperp", zp), ("full", full))}
    pres = {n: c["language_preserved"].to_numpy(bool) for n, c in (("z", z), ("zperp", zp), ("full", full))}
    out: dict = {"n_problems": len(problems)}
    for name, flags in (("z_answer_change", ch["z"]), ("zperp_answer_change", ch["zperp"]),
                        ("full_answer_change", ch["full"]), ("z_language_preservation", pres["z"]),
                        ("z_language_disruption", ~pres["z"]), ("zperp_language_disruption", ~pres["zperp"]),
                        ("full_language_disruption", ~pres["full"])):
        _put_rate(out, name, flags, kw)
    agree_z = _same(full["extracted"], z["extracted"])
    agree_zp = _same(full["extracted"], zp["extracted"])
    _put_rate(out, "full_agree_z", agree_z, kw)
    _put_rate(out, "full_agree_zperp", agree_zp, kw)
    out["full_like"] = "Z" if agree_z.mean() > agree_zp.mean() else "Z⊥" if agree_z.mean() < agree_zp.mean() \
        else "tie"
    rnd = records[records["condition"] == "random"]
    out["n_random"] = n_random = int(rnd["subspace"].nunique()) if len(rnd) else 0
    if n_random:
        base_map = b_ans.to_dict()
        rnd = rnd.assign(changed=~_same(rnd["extracted"], [base_map[p] for p in rnd["problem"]]))
        frac_ch = rnd.groupby("problem")["changed"].mean().reindex(problems).to_numpy(float)
        frac_pr = rnd.groupby("problem")["language_preserved"].mean().reindex(problems).to_numpy(float)
        _put_rate(out, "random_answer_change", frac_ch, kw)
        _put_rate(out, "random_language_preservation", frac_pr, kw)
        _put_difference(out, "z_minus_random_answer_change", ch["z"].astype(float) - frac_ch, kw)
    else:
        _put_missing(out, ("random_answer_change", "random_language_preservation", "z_minus_random_answer_change"))
    _put_mcnemar(out, "answer", ch["z"], ch["zperp"])
    _put_mcnemar(out, "language", ~pres["zperp"], ~pres["z"])
    return out


def config_verdict(m: Mapping) -> tuple[str, dict]:
    """Verdict of one configuration from :func:`config_metrics` (criteria in the module docstring).

    Returns
    -------
    verdict : str
        One of :data:`VERDICTS`.
    criteria : dict
        ``A`` (Z > Z⊥ on answers), ``R`` (Z > random), ``L1`` (Z keeps
        language), ``L2`` (Z⊥ disrupts language), ``K`` (Z⊥ keeps answers),
        ``rev`` (Z⊥ > Z on answers), each a bool.
    """
    z, zp = m["z_answer_change"], m["zperp_answer_change"]
    p = m["mcnemar_answer_p"]
    A = bool(z > zp and (p < ALPHA or m["z_answer_change_lo"] > m["zperp_answer_change_hi"]))
    rev = bool(zp > z and (p < ALPHA or m["zperp_answer_change_lo"] > m["z_answer_change_hi"]))
    lo = m.get("z_minus_random_answer_change_lo", float("nan"))
    R = bool(np.isfinite(lo) and lo > 0)
    L1 = bool(m["z_language_preservation"] >= MIN_Z_LANGUAGE_PRESERVATION)
    dz, dzp = m["z_language_disruption"], m["zperp_language_disruption"]
    L2 = bool(dzp > dz and (m["mcnemar_language_p"] < ALPHA
                            or m["zperp_language_disruption_lo"] > m["z_language_disruption_hi"]))
    K = bool(zp <= MAX_ZPERP_ANSWER_CHANGE)
    crit = {"A": A, "R": R, "L1": L1, "L2": L2, "K": K, "rev": rev}
    if A and R and L1 and L2 and K:
        return "double dissociation", crit
    if A and R:
        return "partial success", crit
    if rev:
        return "reverse", crit
    return "null", crit


def _criteria_note(crit: Mapping) -> str:
    names = {"A": "Z>Z⊥ answers", "R": "Z>random", "L1": "Z keeps language", "L2": "Z⊥ disrupts language",
             "K": "Z⊥ keeps answers"}
    return "; ".join(f"{'✓' if crit[c] else '✗'} {names[c]}" for c in ("A", "R", "L1", "L2", "K"))


def overall_verdict(verdicts: Sequence[str]) -> str:
    """The seed's rule over the configurations of the primary direction (reported beside the headline).

    The strongest verdict reached by any configuration (double dissociation >
    partial success > null); ``reverse`` only when no configuration reaches
    partial success or better and at least one is ``reverse``. (A maximum over
    configurations, as the seed asks to try OT before declaring null; not
    corrected for multiplicity — the per-config table shows how many agree. A null input reads
    positive in about 7 % of seeds at 8 configurations, so the headline is the pre-registered primary
    configuration's own verdict, :func:`zhunt.report.patching_grid.verdict_markdown`.)
    """
    v = list(verdicts)
    for label in ("double dissociation", "partial success"):
        if label in v:
            return label
    if "reverse" in v:
        return "reverse"
    return "null"


def verdict_caption() -> str:
    """One paragraph stating the verdict rule and its thresholds."""
    return (
        f"Verdict per configuration (rates over problems, 95% percentile bootstrap CIs with {N_BOOTSTRAP} "
        f"resamples; exact McNemar tests at alpha = {ALPHA}). A = Z-patch changes the answer (vs the "
        f"unpatched answer) more often than the Z⊥-patch: rate_Z > rate_Z⊥ and (McNemar p < {ALPHA} or the "
        f"CIs do not overlap). R = Z beats the random-subspace control of the same k: the paired bootstrap "
        f"CI of change_Z - change_random lies above 0. L1 = Z-patch keeps the target language in >= "
        f"{MIN_Z_LANGUAGE_PRESERVATION:.0%} of problems. L2 = Z⊥-patch disrupts the output language more "
        f"than the Z-patch (McNemar p < {ALPHA} or non-overlapping CIs). K = Z⊥-patch changes <= "
        f"{MAX_ZPERP_ANSWER_CHANGE:.0%} of answers. double dissociation = A, R, L1, L2 and K; partial "
        f"success = A and R; reverse = Z⊥ changes answers more than Z (mirror of A); null otherwise. "
        f"Headline = the pre-registered primary configuration's verdict; the seed's rule (the strongest "
        f"verdict over the configurations of the primary direction, not corrected for their number) is "
        f"reported beside it.")


# ------------------------------------------------------------------------------------ donor design
def donor_map(problems: Sequence[str], answers: Mapping[str, int] | Sequence[int], seed: int = 0) -> dict:
    """Fixed donor of every problem for the ``donor`` source.

    The problems are put in a permutation seeded with ``seed``; the donor of
    problem ``i`` is the next problem after it (cyclically) in that order whose
    answer differs from ``answer(i)``. Hence ``d(i) != i`` and
    ``answer(d(i)) != answer(i)`` always (a problem may donate to several).
    This is :func:`zhunt.experiments.patching_design.donor_pairs` with one
    donor per problem (the same permutation and rule as the interchange cells).

    Parameters
    ----------
    problems : sequence of str
    answers : mapping ``problem -> answer`` or sequence aligned with ``problems``

    Returns
    -------
    dict
        ``problem -> donor problem``.

    Raises
    ------
    ZhuntError
        When some problem has no other problem with a different answer.
    """
    from zhunt.experiments.patching_design import donor_pairs

    problems = list(problems)
    ans = dict(answers) if isinstance(answers, Mapping) else dict(zip(problems, answers))
    pairs, unmatched = donor_pairs(problems, ans, seed=seed, n_donors=1)
    if unmatched:
        p = unmatched[0]
        raise ZhuntError("patching.sources", f"no donor for problem {p!r}: every other problem has the "
                         f"same answer {ans[p]} (the donor design needs at least two distinct answers)")
    return dict(pairs)


def donor_metrics(records: pd.DataFrame, *, seed: int = 0, n_resamples: int = N_BOOTSTRAP) -> dict:
    """Derived metrics of one ``donor``-source configuration from its records.

    Parameters
    ----------
    records : pandas.DataFrame
        The rows of ONE configuration: ``problem, condition, subspace,
        extracted, language_preserved, donor_answer`` (the donor's key answer;
        one ``none``, ``z``, ``zperp``, ``full`` row per problem and
        ``n_random >= 0`` ``random`` rows).

    Returns
    -------
    dict
        For each rate ``name``: ``name``, ``name_lo``, ``name_hi`` (95%
        bootstrap CI). ``{c}_transfer`` (patched answer == donor's answer) and
        ``{c}_kept`` (== own unpatched answer, NA == NA) for ``c`` in ``z,
        zperp, full, random`` (random: per problem the fraction over the
        subspaces), ``none_transfer`` (the unpatched answer already equals the
        donor's: the chance floor), ``z_language_preservation``,
        ``{z,zperp,full}_language_disruption``,
        ``random_language_preservation``; paired bootstrap
        ``z_minus_random_transfer`` and ``z_minus_zperp_transfer``; exact
        McNemar ``mcnemar_transfer_p/_n01/_n10`` (n01 = only Z transferred)
        and ``mcnemar_language_p/_n01/_n10`` (n01 = only Z⊥ disrupted);
        ``n_problems``, ``n_random``.
    """
    kw = dict(seed=seed, n_resamples=n_resamples)
    base, problems = _baseline(records)
    if "donor_answer" not in records.columns:
        raise ValueError("donor records need a 'donor_answer' column")
    donor_ans = pd.Series(base["donor_answer"].to_numpy(), index=problems)
    b_ans = base["extracted"]
    out: dict = {"n_problems": len(problems)}

    def transfer(ex, pids):
        d = pd.Series([donor_ans[p] for p in pids], dtype="Int64")
        return (pd.Series(ex, dtype="Int64").reset_index(drop=True) == d).fillna(False).to_numpy(bool)

    tr, kept, pres = {}, {}, {}
    for name in ("z", "zperp", "full"):
        c = _condition(records, name, problems)
        tr[name] = transfer(c["extracted"], problems)
        kept[name] = _same(c["extracted"], b_ans)
        pres[name] = c["language_preserved"].to_numpy(bool)
    _put_rate(out, "none_transfer", transfer(b_ans, problems), kw)
    for name in ("z", "zperp", "full"):
        _put_rate(out, f"{name}_transfer", tr[name], kw)
    for name in ("z", "zperp", "full"):
        _put_rate(out, f"{name}_kept", kept[name], kw)
    _put_rate(out, "z_language_preservation", pres["z"], kw)
    for name in ("z", "zperp", "full"):
        _put_rate(out, f"{name}_language_disruption", ~pres[name], kw)
    _put_difference(out, "z_minus_zperp_transfer", tr["z"].astype(float) - tr["zperp"].astype(float), kw)
    rnd = records[records["condition"] == "random"]
    out["n_random"] = n_random = int(rnd["subspace"].nunique()) if len(rnd) else 0
    if n_random:
        rnd = rnd.assign(_tr=transfer(rnd["extracted"], rnd["problem"]),
                         _kept=_same(rnd["extracted"], [b_ans[p] for p in rnd["problem"]]))
        g = rnd.groupby("problem")
        frac_tr = g["_tr"].mean().reindex(problems).to_numpy(float)
        _put_rate(out, "random_transfer", frac_tr, kw)
        _put_rate(out, "random_kept", g["_kept"].mean().reindex(problems).to_numpy(float), kw)
        _put_rate(out, "random_language_preservation", g["language_preserved"].mean().reindex(problems).to_numpy(float),
                  kw)
        _put_difference(out, "z_minus_random_transfer", tr["z"].astype(float) - frac_tr, kw)
    else:
        _put_missing(out, ("random_transfer", "random_kept", "random_language_preservation", "z_minus_random_transfer"))
    _put_mcnemar(out, "transfer", tr["z"], tr["zperp"])
    _put_mcnemar(out, "language", ~pres["zperp"], ~pres["z"])
    return out


def donor_verdict(m: Mapping) -> tuple[str, dict]:
    """Verdict of one ``donor`` configuration from :func:`donor_metrics`.

    Criteria (CIs are the 95% bootstrap intervals of the rates):

    * **T** "Z carries the problem": ``CI_lo(transfer_Z) > CI_hi(transfer_Z⊥)``
      and ``> CI_hi(transfer_random)`` (when there is a random control), and
      Z-patch language preservation ``>= MIN_DONOR_Z_LANGUAGE_PRESERVATION``;
    * **L** "Z⊥ carries the language": ``CI_lo(disruption_Z⊥) > CI_hi(disruption_Z)``;
    * **rev** "Z⊥ transfers more than Z": ``CI_lo(transfer_Z⊥) > CI_hi(transfer_Z)``.

    ``double dissociation`` = T and L; ``partial success`` = T only;
    ``reverse`` = rev (then T is impossible); ``null`` otherwise (also L
    without T: a language effect alone says nothing about where the problem is).

    Returns
    -------
    verdict : str
        One of :data:`VERDICTS`.
    criteria : dict
        ``T``, ``L``, ``rev`` (bools).
    """
    zlo = m["z_transfer_lo"]
    rhi = m.get("random_transfer_hi", float("nan"))
    beats_random = (not np.isfinite(rhi)) or zlo > rhi
    T = bool(zlo > m["zperp_transfer_hi"] and beats_random
             and m["z_language_preservation"] >= MIN_DONOR_Z_LANGUAGE_PRESERVATION)
    L = bool(m["zperp_language_disruption_lo"] > m["z_language_disruption_hi"])
    rev = bool(m["zperp_transfer_lo"] > m["z_transfer_hi"])
    crit = {"T": T, "L": L, "rev": rev}
    if T and L:
        return "double dissociation", crit
    if T:
        return "partial success", crit
    if rev:
        return "reverse", crit
    return "null", crit


def _donor_criteria_note(crit: Mapping) -> str:
    names = {"T": "Z carries the problem", "L": "Z⊥ carries the language", "rev": "Z⊥ transfers more than Z"}
    return "; ".join(f"{'✓' if crit[c] else '✗'} {names[c]}" for c in ("T", "L", "rev"))


def donor_verdict_caption() -> str:
    """One paragraph stating the donor verdict rule and its thresholds."""
    return (
        f"Donor design: each target prompt is patched with the source-language states of a DIFFERENT problem "
        f"whose key answer differs (fixed seeded derangement). Transfer = the patched answer equals the "
        f"donor's answer; kept = it equals the own unpatched answer. Rates over problems with 95% percentile "
        f"bootstrap CIs ({N_BOOTSTRAP} resamples); the random control is the per-problem fraction over the "
        f"random k-subspaces. \"Z carries the problem\" iff the lower CI bound of the Z-patch transfer rate "
        f"exceeds the upper CI bounds of both the Z⊥-patch and the random-control transfer rates, and the "
        f"Z-patch preserves the target language in >= {MIN_DONOR_Z_LANGUAGE_PRESERVATION:.0%} of problems. "
        f"\"Z⊥ carries the language\" iff the lower CI bound of the Z⊥-patch language disruption exceeds "
        f"the upper CI bound of the Z-patch's. double dissociation = both; partial success = the first only; "
        f"reverse = the Z⊥-patch transfer CI lies above the Z-patch's; null otherwise. Exact McNemar p-values "
        f"(Z vs Z⊥ transfer and language disruption) are reported alongside.")


# ------------------------------------------------------------------------------------ the grid
def _transferred(rec: pd.DataFrame) -> np.ndarray:
    """Per row: the extracted answer equals the donor's answer (NA never transfers)."""
    a = pd.Series(rec["extracted"], dtype="Int64").reset_index(drop=True)
    d = pd.Series(rec["donor_answer"], dtype="Int64").reset_index(drop=True)
    return (a == d).fillna(False).to_numpy(bool)


def _clouds(store, pid: str, lang: str, j: int) -> np.ndarray:
    X = store.tokens(pid, lang, j)
    keep = ~store.token_mask(pid, lang)
    if not keep.any():
        raise ZhuntError(str(store.path), f"prompt {pid!r} ({lang}) has only special tokens")
    return X[keep]


def check_grid(layers: Sequence[int], ks: Sequence[int], alignments: Sequence[str], directions: Sequence[str],
               languages: Sequence[str], mask_paths: Mapping, sources: str | Sequence[str]) -> dict:
    """Validate the grid of rule ``patching`` (raises :class:`ZhuntError` naming the config key).

    Returns
    -------
    dict
        ``layers, ks`` (ints), ``alignments``, ``dirs`` (``[(direction, target, source_lang)]``),
        ``sources`` (list), ``needed`` (the languages the directions use).
    """
    layers = [int(x) for x in layers]
    ks = [int(x) for x in ks]
    alignments = list(alignments)
    sources = [sources] if isinstance(sources, str) else list(sources)
    if not sources or len(set(sources)) != len(sources) or not set(sources) <= set(SOURCES):
        raise ZhuntError("patching.sources", f"sources must be distinct values of {SOURCES}, got {sources}")
    for a in alignments:
        if a not in ALIGNMENTS:
            raise ZhuntError("patching.alignments", f"unknown alignment {a!r} (expected one of {ALIGNMENTS})")
    dirs = [(d, *parse_direction(d)) for d in directions]
    if not layers or not ks or not alignments or not dirs:
        raise ZhuntError("patching", "layers, ks, alignments and directions must all be non-empty")
    needed = {x for _, t, s in dirs for x in (t, s)}
    if not needed <= set(languages):
        raise ZhuntError("patching.languages", f"directions need languages {sorted(needed)}, have {list(languages)}")
    for layer in layers:
        if layer not in mask_paths and str(layer) not in mask_paths:
            raise ZhuntError("patching.mask_paths", f"no mask file for layer {layer}")
    return {"layers": layers, "ks": ks, "alignments": alignments, "dirs": dirs, "sources": sources, "needed": needed}


def grid_context(model_dir, model_name: str, prompts_path, languages: Sequence[str], templates_path, family: str,
                 grid: Mapping, *, seed: int = 0, threads: int | None = None) -> dict:
    """Model, rendered prompts, key answers and donors of the grid (layers and ks checked against the model).

    Returns
    -------
    dict
        :func:`zhunt.experiments.patching_cells.cell_context`'s (``model, tokenizer, adapter,
        add_special, prompt_of``, ...) plus ``answer_of`` (``problem -> key answer``) and ``donors``
        (:func:`donor_map`, or ``{}`` without the ``donor`` source).
    """
    from zhunt.experiments.patching_cells import cell_context
    from zhunt.config import check_ks, check_layer

    ctx = cell_context(model_dir, None, prompts_path, languages, templates_path, family, threads=threads)
    ad = ctx["adapter"]
    for layer in grid["layers"]:
        check_layer(layer, ad.num_layers, model_name, key="patching.layers")
    check_ks(grid["ks"], ad.hidden_size, model_name, key="patching.ks")
    return {**ctx, "answer_of": ctx["key_answer"],
            "donors": donor_map(ctx["problems"], ctx["key_answer"], seed) if "donor" in grid["sources"] else {}}


def check_store(store, ctx: Mapping, languages) -> None:
    """The store matches the model and holds exactly the tokens the live forward sees."""
    from zhunt.models.batching import tokenize_prompts

    ad = ctx["adapter"]
    if store.hidden_size != ad.hidden_size or store.num_layers != ad.num_layers:
        raise ZhuntError(str(store.path), f"store has L={store.num_layers}, d={store.hidden_size}; model has "
                         f"L={ad.num_layers}, d={ad.hidden_size}")
    keys = [(p, lg) for p in ctx["problems"] for lg in sorted(languages)]
    live = tokenize_prompts(ctx["tokenizer"], [ctx["prompt_of"][k] for k in keys],
                            add_special_tokens=ctx["add_special"])
    for (p, lg), ids in zip(keys, live):
        try:
            stored = store.prompt_token_ids(p, lg)
        except KeyError:
            raise ZhuntError(str(store.path), f"store lacks prompt {p!r} ({lg})") from None
        if list(map(int, stored)) != ids:
            raise ZhuntError(str(store.path), f"prompt {p!r} ({lg}) tokenizes differently from the store "
                             "(built from another prompt table or template?)")


def baseline_records(ctx: Mapping, targets: Sequence[str], gen_kw: Mapping) -> dict:
    """The unpatched generations of every target language (``none`` rows; they do not depend on the config)."""
    from zhunt.models.generation import generate

    out = {}
    for tgt in dict.fromkeys(targets):
        g = generate(ctx["model"], ctx["tokenizer"], [ctx["prompt_of"][(p, tgt)] for p in ctx["problems"]], **gen_kw)
        out[tgt] = pd.DataFrame([{"problem": p, "condition": "none", "subspace": -1, "text": x["text"],
                                  "n_new_tokens": x["n_new_tokens"]} for p, x in zip(ctx["problems"], g)])
    return out


def config_sources(store, problems: Sequence[str], src_of: Mapping, alignment: str, tgt: str, src: str, j: int, *,
                   sinkhorn: bool = False) -> dict:
    """``problem -> z``: the source of every target prompt at hidden index ``j`` (module docstring)."""
    zsrc = {}
    for p in problems:
        Xs = _clouds(store, src_of[p], src, j)
        zsrc[p] = mean_source(Xs) if alignment == "mean" else ot_sources(Xs, _clouds(store, p, tgt, j),
                                                                          sinkhorn=sinkhorn)
    return zsrc


def config_records(ctx: Mapping, store, baseline: pd.DataFrame, cfg: Mapping, V_Z, random_V, gen_kw: Mapping, *,
                   sinkhorn: bool = False) -> pd.DataFrame:
    """The records of one configuration: every (problem, condition) generation, scored.

    Parameters
    ----------
    ctx : dict
        :func:`grid_context`.
    store : ActivationStore
    baseline : DataFrame
        The target language's ``none`` rows (:func:`baseline_records`).
    cfg : mapping
        ``layer, k, alignment, direction, target, source_lang, source``.
    V_Z : (k, d); random_V : list of (k, d)
    gen_kw : mapping
        Keyword arguments of :func:`zhunt.models.generation.generate`.
    """
    from zhunt.models.generation import generate

    problems, tgt = ctx["problems"], cfg["target"]
    src_of = ctx["donors"] if cfg["source"] == "donor" else {p: p for p in problems}
    zsrc = config_sources(store, problems, src_of, cfg["alignment"], tgt, cfg["source_lang"], cfg["layer"] + 1,
                          sinkhorn=sinkhorn)
    rows, edits = patch_rows(problems, zsrc, V_Z, random_V)
    keep = [i for i, r in enumerate(rows) if r["condition"] != "none"]
    g = generate(ctx["model"], ctx["tokenizer"], [ctx["prompt_of"][(rows[i]["problem"], tgt)] for i in keep],
                 layer_module=ctx["adapter"].layers[cfg["layer"]], edits=[edits[i] for i in keep], **gen_kw)
    rec = pd.DataFrame([{**rows[i], "text": x["text"], "n_new_tokens": x["n_new_tokens"]} for i, x in zip(keep, g)])
    rec = pd.concat([baseline, rec], ignore_index=True)
    return _labelled(rec, ctx, cfg, src_of)


def _labelled(rec: pd.DataFrame, ctx: Mapping, cfg: Mapping, src_of: Mapping) -> pd.DataFrame:
    """Score every generation (:func:`score_text`), add the config and donor columns, sort by problem and condition."""
    answer_of, problems, tgt = ctx["answer_of"], ctx["problems"], cfg["target"]
    scored = pd.DataFrame([score_text(t, answer_of[p], tgt) for t, p in zip(rec["text"], rec["problem"])])
    rec = pd.concat([rec, scored], axis=1)
    rec["extracted"] = rec["extracted"].astype("Int64")
    bmap = rec[rec["condition"] == "none"].set_index("problem")["extracted"].to_dict()
    rec["answer_changed"] = ~_same(rec["extracted"], [bmap[p] for p in rec["problem"]])
    for col in ("source", "direction", "alignment", "k", "layer"):
        rec.insert(0, col, cfg[col])
    rec.insert(6, "donor_answer", [answer_of[src_of[p]] for p in rec["problem"]])
    rec.insert(6, "donor", [src_of[p] for p in rec["problem"]])
    rec.insert(6, "answer", [answer_of[p] for p in rec["problem"]])
    rec.insert(6, "source_lang", cfg["source_lang"])
    rec.insert(6, "target_lang", tgt)
    rec.insert(len(rec.columns), "answer_transferred", _transferred(rec))
    cond_order = {c: i for i, c in enumerate(CONDITIONS)}
    rec = rec.assign(_o=rec["condition"].map(cond_order), _p=rec["problem"].map({p: i for i, p in enumerate(problems)}))
    return rec.sort_values(["_p", "_o", "subspace"], kind="stable").drop(columns=["_o", "_p"]).reset_index(drop=True)


def config_result(rec: pd.DataFrame, cfg: Mapping, *, seed: int = 0) -> dict:
    """One row of ``metrics.tsv``: the config (with its ``primary`` flag, :func:`grid_configs`), its metrics
    (:func:`config_metrics` / :func:`donor_metrics`), ``verdict``, ``crit_*`` and the ``criteria`` note."""
    if cfg["source"] == "donor":
        m = donor_metrics(rec, seed=seed)
        verdict, crit = donor_verdict(m)
        note = _donor_criteria_note(crit)
        log.info("L%d k=%d %s %s donor: transfer Z %.2f Z⊥ %.2f rand %.2f -> %s", cfg["layer"], cfg["k"],
                 cfg["alignment"], cfg["direction"], m["z_transfer"], m["zperp_transfer"], m["random_transfer"],
                 verdict)
    else:
        m = config_metrics(rec, seed=seed)
        verdict, crit = config_verdict(m)
        note = _criteria_note(crit)
        log.info("L%d k=%d %s %s: Z %.2f Z⊥ %.2f rand %.2f -> %s", cfg["layer"], cfg["k"], cfg["alignment"],
                 cfg["direction"], m["z_answer_change"], m["zperp_answer_change"], m["random_answer_change"], verdict)
    return {"layer": cfg["layer"], "k": cfg["k"], "alignment": cfg["alignment"], "direction": cfg["direction"],
            "source": cfg["source"], "primary": bool(cfg["primary"]), **m, "verdict": verdict,
            **{f"crit_{c}": v for c, v in crit.items()}, "criteria": note}


def grid_configs(grid: Mapping):
    """Every configuration of the grid in table order: layer, k, then alignment x direction x source.

    ``primary`` marks the pre-registered primary configuration of each source: the first layer,
    the largest k, the first alignment and the first direction of the grid.
    """
    for layer in grid["layers"]:
        for k in grid["ks"]:
            for alignment in grid["alignments"]:
                for direction, tgt, src in grid["dirs"]:
                    primary = (layer == grid["layers"][0] and k == max(grid["ks"])
                               and alignment == grid["alignments"][0] and direction == grid["dirs"][0][0])
                    for source in grid["sources"]:
                        yield {"layer": layer, "k": k, "alignment": alignment, "direction": direction,
                               "target": tgt, "source_lang": src, "source": source, "primary": primary}
