"""Phase 0: does the model solve the problems better in Chinese than in English?

Every problem of a paired prompt table is posed in every requested language
(0..n few-shot exemplars, :func:`zhunt.data.prompts.render_prompts`), answered by
greedy generation (:func:`zhunt.models.generation.generate`) and scored:

* ``extracted`` — :func:`zhunt.data.answers.extract_answer` with the prompt's language;
* ``correct`` — ``extracted == answer``;
* ``output_lang`` — :func:`zhunt.data.language_id.classify_language` of the continuation
  (``en`` = Latin script, ``zh``, ``mixed``, ``other``) and its
  :func:`zhunt.data.language_id.cjk_fraction`.

Per language: accuracy with a percentile bootstrap 95% CI over problems
(:func:`zhunt.stats.rate_ci`). Paired comparison of each language with
English on the same problems: the correct-count difference
``diff = n_correct(lang) - n_correct(en)``, the discordant pairs and an exact
McNemar test (:func:`zhunt.stats.mcnemar_exact`), and the seed's Phase 0
contingency (seed 001) as a *band* of ``diff`` — every integer falls in
exactly one band:

=====================  =================  =====================================================
band                   condition          seed's action
=====================  =================  =====================================================
``zh advantage``       ``diff >= 3``      proceed: behavioural evidence for the hypothesis
``small zh edge``      ``diff == 2``      proceed; the edge is within noise (between the bands)
``equal``              ``|diff| <= 1``    proceed anyway; flag the missing asymmetry as a limitation
``en advantage``       ``diff <= -2``     investigate prompt formatting (retry without few-shot)
=====================  =================  =====================================================

(for a language other than ``zh`` the labels carry its code.) The bands count problems and
ignore how many there are: with 40 problems, each solved with probability 0.5 and the same way in
both languages for 60 % of them (:func:`zhunt.calibration.generators.paired_correct`), ``|diff| <= 1``
holds in 38.5 % of 200 draws (BENCHMARKS.md, "Verdict calibration"), so the band is the seed's
literal reading, not a test. The verdict (:func:`paired_verdict`, column ``paired_verdict``) is the exact McNemar test
at :data:`PAIRED_ALPHA`: ``{lang} better`` / ``en better`` by the sign of ``diff`` when
``p < PAIRED_ALPHA``, else ``no difference`` (a level-``PAIRED_ALPHA`` test: calibrated in
``tests/test_calibration.py``).

Per-step trajectories (optional, the GARCH input of seed 003): with
``out_steps`` the generator records, at every generated step ``t`` (the state
at the position that emitted generated token ``t``, :mod:`zhunt.models.generation`),
the input and the output of decoder layer ``l = step_layer`` for the zh and the
en generation of each problem. The input of layer ``l`` is the output of layer
``l - 1`` (hidden index ``l``; for ``l = 0`` the embedding output, recorded
from ``model.get_input_embeddings()``), its output is hidden index ``l + 1``.
Seed 003's layer update and cross-lingual update difference are

``f_l^(t)(lang) = h_{l+1}^(t)(lang) - h_l^(t)(lang)``   (what layer ``l`` adds to the residual stream)

``delta_l^(t) = f_l^(t)(zh) - f_l^(t)(en)``,   ``y_t = || delta_l^(t) ||_2^2``

for ``t = 0 .. min(T_zh, T_en) - 1`` (``T_lang`` = number of generated
tokens, eos included). The output difference ``y_output_t = || h_{l+1}^(t)(zh)
- h_{l+1}^(t)(en) ||_2^2`` (the series fitted before, which accumulates the
updates of every layer up to ``l``) is kept as a secondary column. One row per
``(problem, step)``.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from zhunt.stats import mcnemar_exact, rate_ci
from zhunt.data.answers import extract_answer
from zhunt.data.pairing import pair_by_problem
from zhunt.data.language_id import cjk_fraction, classify_language

__all__ = ["BANDS", "contingency_band", "PAIRED_ALPHA", "BEHAVIOUR_RULE", "paired_verdict", "score_generations", "summarize_behaviour", "STEP_INPUT", "STEP_OUTPUT",
           "step_record_modules", "step_distances"]

log = logging.getLogger("zhunt.experiments.behaviour")

#: Bands of ``diff = n_correct(lang) - n_correct(en)`` (seed 001 Phase 0 contingency):
#: (label template, rule text, action).
BANDS = (
    ("{lang} advantage", "diff >= 3", "proceed: behavioural evidence for the hypothesis"),
    ("small {lang} edge", "diff == 2", "proceed; the edge is within noise"),
    ("equal", "|diff| <= 1", "proceed anyway; flag the missing asymmetry as a limitation"),
    ("en advantage", "diff <= -2", "investigate prompt formatting (retry without few-shot)"),
)


#: Level of the exact McNemar test behind :func:`paired_verdict`.
PAIRED_ALPHA = 0.05
#: The band and the verdict as one line (captions, the summary).
BEHAVIOUR_RULE = ("seed band of diff = correct(lang) - correct(en): '{lang} advantage' diff >= 3, 'small {lang} edge' "
                  "diff == 2, 'equal' |diff| <= 1, 'en advantage' diff <= -2; verdict: exact McNemar p < "
                  f"{PAIRED_ALPHA:g} -> '{{lang}} better' / 'en better' by the sign of diff, else 'no difference'")


def paired_verdict(p: float, diff: int, lang: str = "zh") -> str:
    """Calibrated Phase 0 verdict: ``"{lang} better"`` / ``"en better"`` (sign of ``diff``) when the exact
    McNemar ``p < PAIRED_ALPHA``, else ``"no difference"`` (also for a NaN ``p``)."""
    if not (np.isfinite(p) and p < PAIRED_ALPHA) or diff == 0:
        return "no difference"
    return f"{lang} better" if diff > 0 else "en better"


def contingency_band(diff: int, lang: str = "zh") -> str:
    """Seed 001's Phase 0 band of the paired correct-count difference ``diff = lang - en``.

    ``diff >= 3`` -> ``"zh advantage"``; ``diff == 2`` -> ``"small zh edge"``;
    ``|diff| <= 1`` -> ``"equal"``; ``diff <= -2`` -> ``"en advantage"``.
    """
    diff = int(diff)
    if diff >= 3:
        return f"{lang} advantage"
    if diff == 2:
        return f"small {lang} edge"
    if abs(diff) <= 1:
        return "equal"
    return "en advantage"


def score_generations(long: pd.DataFrame, gens: Sequence[dict]) -> pd.DataFrame:
    """One record per (problem, language) generation.

    Parameters
    ----------
    long : pandas.DataFrame
        From :func:`zhunt.data.prompts.to_long` plus a ``prompt`` column (the rendered text).
    gens : sequence of dict
        :func:`zhunt.models.generation.generate` results aligned with ``long``.

    Returns
    -------
    pandas.DataFrame
        ``id, category, lang, answer, prompt, output, extracted (Int64), correct,
        output_lang, cjk_fraction, n_new_tokens``.
    """
    rows = []
    for (_, r), g in zip(long.iterrows(), gens):
        ans = extract_answer(g["text"], r["lang"])
        rows.append({
            "id": r["id"], "category": r["category"], "lang": r["lang"], "answer": int(r["answer"]),
            "prompt": r["prompt"], "output": g["text"], "extracted": ans,
            "correct": ans is not None and ans == int(r["answer"]),
            "output_lang": classify_language(g["text"]), "cjk_fraction": cjk_fraction(g["text"]),
            "n_new_tokens": g["n_new_tokens"],
        })
    df = pd.DataFrame(rows)
    df["extracted"] = df["extracted"].astype("Int64")
    return df


def summarize_behaviour(records: pd.DataFrame, languages: Sequence[str], *, seed: int = 0,
                        n_resamples: int = 2000, where: str = "behaviour records") -> pd.DataFrame:
    """Per-language accuracy (bootstrap 95% CI) and the paired comparison with English.

    Parameters
    ----------
    records : pandas.DataFrame
        :func:`score_generations` (``id``, ``lang``, ``correct``, ``extracted``, ``output_lang``,
        ``cjk_fraction``).
    languages : sequence of str
    seed, n_resamples
        The bootstrap of the accuracy intervals.
    where : str
        Named in errors (the prompt table the records come from).

    Returns
    -------
    pandas.DataFrame
        One row per language: ``lang, n, n_correct, accuracy, ci_lo, ci_hi,
        n_no_answer, on_language_rate`` (output script matches the prompt's:
        ``zh`` for zh, Latin ``en`` for the others), ``mean_cjk_fraction``; for
        languages other than en, paired with en by problem
        (:func:`zhunt.data.pairing.pair_by_problem`: a problem missing in either is an error):
        ``n_paired, n_only_lang, n_only_en, diff_vs_en, mcnemar_p, band, paired_verdict``.
    """
    out = []
    by = {lg: records[records["lang"] == lg].set_index("id") for lg in languages}
    for lg in languages:
        r = by[lg]
        acc = rate_ci(r["correct"].to_numpy(bool), seed=seed, n_resamples=n_resamples)
        script = "zh" if lg == "zh" else "en"
        row = {"lang": lg, "n": acc["n"], "n_correct": int(acc["k"]), "accuracy": acc["rate"],
               "ci_lo": acc["lo"], "ci_hi": acc["hi"], "n_no_answer": int(r["extracted"].isna().sum()),
               "on_language_rate": float((r["output_lang"] == script).mean()) if len(r) else np.nan,
               "mean_cjk_fraction": float(r["cjk_fraction"].mean()) if len(r) else np.nan}
        if lg != "en" and "en" in by:
            _, rows = pair_by_problem({lg: list(r.index), "en": list(by["en"].index)}, where=where)
            a = r["correct"].to_numpy(bool)[rows[lg]]
            b = by["en"]["correct"].to_numpy(bool)[rows["en"]]
            mc = mcnemar_exact(a, b)
            diff = int(a.sum()) - int(b.sum())
            row.update(n_paired=len(a), n_only_lang=mc["n01"], n_only_en=mc["n10"], diff_vs_en=diff,
                       mcnemar_p=mc["p"], band=contingency_band(diff, lg),
                       paired_verdict=paired_verdict(mc["p"], diff, lg))
        out.append(row)
    df = pd.DataFrame(out)
    for col in ("n_paired", "n_only_lang", "n_only_en", "diff_vs_en"):
        if col in df:
            df[col] = df[col].astype("Int64")
    return df


#: Keys of the two recorded states of the per-step trajectories (:func:`zhunt.stages.behaviour.run_behaviour`).
STEP_INPUT, STEP_OUTPUT = "input", "output"


def step_record_modules(model, layer: int) -> dict:
    """The modules whose per-step outputs give the input and output of decoder layer ``layer``.

    Returns
    -------
    dict
        ``{STEP_INPUT: module, STEP_OUTPUT: module}`` for
        :func:`zhunt.models.generation.generate`'s ``record_layers``: the output of
        ``layers[layer - 1]`` (hidden index ``layer``; for ``layer = 0`` the
        embedding module ``model.get_input_embeddings()``, whose output is what
        ``layers[0]`` receives) and of ``layers[layer]`` (hidden index ``layer + 1``).
    """
    from zhunt.models import get_adapter

    layers = get_adapter(model).layers
    layer = int(layer)
    inp = layers[layer - 1] if layer > 0 else model.get_input_embeddings()
    return {STEP_INPUT: inp, STEP_OUTPUT: layers[layer]}


def step_distances(long: pd.DataFrame, gens: Sequence[dict], a: str = "zh", b: str = "en", *,
                   where: str = "behaviour prompts") -> pd.DataFrame:
    """Per-step squared norms of the cross-lingual update difference and output difference.

    Parameters
    ----------
    long : pandas.DataFrame
        Rows aligned with ``gens`` (columns ``id``, ``lang``).
    gens : sequence of dict
        :func:`zhunt.models.generation.generate` results whose ``states`` hold
        ``STEP_INPUT`` and ``STEP_OUTPUT``, each of shape ``(T, d)``: the
        input ``h_l^(t)`` and output ``h_{l+1}^(t)`` of the recorded layer ``l``.
    a, b : str
        The pair (seed 003: zh and en), paired by problem
        (:func:`zhunt.data.pairing.pair_by_problem`: a problem missing in either is an error).
    where : str
        Named in errors (the prompt table).

    Returns
    -------
    pandas.DataFrame
        ``problem, step, y, y_output, T_zh, T_en`` (named after ``a``/``b``),
        problems in the order of ``a``'s rows, steps ascending, ``t < min(T_a, T_b)``:
        ``y = ||f^(t)(a) - f^(t)(b)||^2`` with ``f^(t) = h_{l+1}^(t) - h_l^(t)``
        (seed 003's ``||delta_l^(t)||^2``) and
        ``y_output = ||h_{l+1}^(t)(a) - h_{l+1}^(t)(b)||^2``.
    """
    lang = long["lang"].to_numpy()
    pos = {lg: np.flatnonzero(lang == lg) for lg in (a, b)}  # rows of ``long`` / ``gens`` per language
    problems, rows = pair_by_problem({lg: list(long["id"].to_numpy()[pos[lg]]) for lg in (a, b)}, where=where)
    cols = ["problem", "step", "y", "y_output", f"T_{a}", f"T_{b}"]
    parts = []
    for i, pid in enumerate(problems):
        sa, sb = gens[pos[a][rows[a][i]]]["states"], gens[pos[b][rows[b][i]]]["states"]
        oa = np.asarray(sa[STEP_OUTPUT], dtype=np.float64)
        ob = np.asarray(sb[STEP_OUTPUT], dtype=np.float64)
        fa = oa - np.asarray(sa[STEP_INPUT], dtype=np.float64)
        fb = ob - np.asarray(sb[STEP_INPUT], dtype=np.float64)
        n = min(len(oa), len(ob))
        parts.append(pd.DataFrame({"problem": pid, "step": np.arange(n),
                                   "y": ((fa[:n] - fb[:n]) ** 2).sum(axis=1),
                                   "y_output": ((oa[:n] - ob[:n]) ** 2).sum(axis=1),
                                   f"T_{a}": len(oa), f"T_{b}": len(ob)}))
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
