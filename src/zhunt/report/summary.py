"""Report-side summaries: measured headlines, the seed-000 checklist, summary pages.

Everything here only *reads* the TSV/Markdown outputs of the analysis rules and
never recomputes science. What it reads is a mapping ``files`` (key -> path, keys
of :data:`MODEL_FILES`): the summary rule's named inputs, or :func:`model_files`
for the report labels, which know only the wildcards. Three consumers:

* :func:`measured` gives the one-line measured result of one report item
  (``"decomposition"``, ``"patching"``, ...). The workflow calls it from the
  ``labels`` function of each ``report()`` flag, which Snakemake evaluates
  only while it builds the report (never while it plans a run), so the
  numbers in the report come from the TSVs without any rerun trigger. The
  captions (``workflow/report/*.rst``) print that label.
* :func:`checklist` evaluates the "done" checklist of seed 000 (minimum /
  strong / transformative) by code, each item with its evidence and the
  artifact it rests on.
* :func:`headline` collects the numbers compared across models;
  :func:`model_page` and :func:`models_page` render the per-model and the
  cross-model HTML pages.

Conventions read from the producers: the primary configuration of
``patching/metrics.tsv`` is its row with ``primary`` true; the ``same`` source is
the seed's design. The ARD primary layer is the ``layer`` of ``ard/headline.tsv``
(the held-out test runs at the primary layer). Tables with a ``site`` column
list the primary site (``study.site``) first; headlines read those rows. The digit confound
(``zspace/digit_confound.tsv``, ``theory/digit_confound.tsv``) is read at the first layer.

Missing or malformed inputs never raise from :func:`measured` (a report must
still build while a stage is missing): the item then reads
``"not available: <reason>"``. :func:`checklist` marks such items ❌.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd

from zhunt.errors import ZhuntError
from zhunt.io import write_json, write_table, write_text
from zhunt.activations.decomposition import has_phases
from zhunt.experiments.bridge import BRIDGE_R2_OK, ORTH_TOL, bridge_verdict
from zhunt.experiments.patching import direction_slug

__all__ = ["MIN_PROBLEMS", "ORTH_TOL", "BRIDGE_R2_OK", "Check", "measured", "MEASURES", "checklist",
           "patching_sentence", "headline", "model_page", "models_page", "write_model_summary",
           "write_models_summary"]

#: Seed 000, minimum: the patching table must cover at least this many problems.
MIN_PROBLEMS = 15
# The transformative checks' thresholds live next to their rules: the bridge's in
# zhunt.experiments.bridge (ORTH_TOL, BRIDGE_R2_OK, bridge_verdict), the R(k) phases' in
# zhunt.activations.decomposition (has_phases).

_VERDICT_RANK = {"double dissociation": 3, "partial success": 2, "null": 1, "reverse": 0}


# --------------------------------------------------------------------------- reading

#: The files of one model's results this module reads: key -> path under ``{root}/{model}/``. The
#: summary rule declares each as a named input of the same key; :func:`model_files` builds them
#: for the report labels, which know only the wildcards.
MODEL_FILES: dict[str, str] = {
    "metrics": "patching/metrics.tsv", "verdict": "patching/verdict.md", "tables": "patching/tables",
    "subspaces": "patching/subspaces.tsv", "decomposition": "decomposition/R.tsv",
    "ard_summary": "ard/summary.tsv", "ard_headline": "ard/headline.tsv", "ard_heldout": "ard/heldout.tsv",
    "bridge": "bridge/bridge.tsv", "behaviour": "behaviour/summary.tsv", "phase2": "zspace/phase2_summary.tsv",
    "datadriven": "zspace/datadriven.tsv", "digit_phase2": "zspace/digit_confound.tsv",
    "digit_theory": "theory/digit_confound.tsv", "effective_rank": "structure/effective_rank_summary.tsv",
    "bottleneck": "structure/bottleneck.tsv", "grassmann": "structure/grassmann_adjacent.tsv",
    "ffn": "structure/ffn_alignment.tsv", "families": "structure/families_verdict.tsv",
    "qk": "structure/qk_verdict.tsv", "layer_scores": "structure/layer_scores.tsv",
    "theory": "theory/theory_summary.tsv", "garch": "theory/garch.tsv",
    "training": "organism/training_accuracy.tsv", "summary_json": "summary/summary.json",
    "layer_sweep": "layers/sweep.tsv", "layer_causal": "layers/causal.tsv", "layer_das": "layers/das.tsv",
    "layers": "layers/comparison.tsv",
}
#: Files under ``{root}/`` shared by all models: key -> path.
SHARED_FILES: dict[str, str] = {"toy": "theory/toy_theorem.tsv", "models": "summary/models.tsv",
                                "layer_prediction": "summary/layer_prediction.tsv"}
#: The figures the checklist and the summary page point to (``figures/{name}.png``; the summary
#: rule's ``figures`` input).
FIGURES = ("decomposition_R", "ard_z_size", "ard_spectrum", "bridge_loo_r2", "bridge_spectra",
           "behaviour_accuracy", "phase2_heatmap", "phases")


def model_files(root: str | Path, model: str | None, wildcards=None) -> dict:
    """Where the rules write what this module reads (:data:`MODEL_FILES`, :data:`SHARED_FILES`):
    ``{key: Path}``, plus ``figures`` (``{name: Path}``) and ``ard_layer`` (the ARD table of the
    ``layer`` wildcard, when given). For the report labels; the summary rule passes its inputs."""
    root = Path(root)
    out: dict = {k: root / v for k, v in SHARED_FILES.items()}
    if model is not None:
        base = root / model
        out.update({k: base / v for k, v in MODEL_FILES.items()})
        out["figures"] = {name: base / "figures" / f"{name}.png" for name in FIGURES}
        if getattr(wildcards, "layer", None) is not None:
            out["ard_layer"] = base / f"ard/L{int(wildcards.layer)}.tsv"
    return out



def _tsv(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ZhuntError(str(path), "missing")
    try:
        # "null" is a verdict here, not a missing value: only empty cells (and nan) are NA
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=["", "nan", "NaN"])
    except Exception as exc:  # pandas raises several types on a malformed file
        raise ZhuntError(str(path), f"unreadable TSV ({exc.__class__.__name__})") from None


def _text(path) -> str:
    path = Path(path)
    if not path.exists():
        raise ZhuntError(str(path), "missing")
    return path.read_text(encoding="utf-8")


def _f(x, digits: int = 3) -> str:
    """A number for prose: ``nan`` as ``n/a``, else ``digits`` significant digits."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(x) else f"{x:.{digits}g}"


def _pct(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(x) else f"{100 * x:.0f}%"


def _rate(row: Mapping, name: str) -> str:
    """``40% [28–52%]`` from ``name``, ``name_lo``, ``name_hi``."""
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    ci = f" [{_pct(lo)}–{_pct(hi)}]" if lo is not None and hi is not None else ""
    return f"{_pct(row.get(name))}{ci}"


def _flagged(t: pd.DataFrame, col: str, path) -> pd.Series:
    """The first row of ``t`` whose boolean column ``col`` is true (a producer's flag of its primary or
    predicted row); one line naming ``path`` when there is none."""
    if col not in t.columns:
        raise ZhuntError(str(path), f"no {col!r} column")
    rows = t[t[col].astype(str) == "True"]
    if not len(rows):
        raise ZhuntError(str(path), f"no row with {col} = True")
    return rows.iloc[0]


def _stat(summary: pd.DataFrame, name: str):
    row = summary[summary["statistic"] == name]
    return row["value"].iloc[0] if len(row) else float("nan")


# --------------------------------------------------------------------------- patching helpers


def _patching(files: Mapping) -> tuple[pd.DataFrame, dict]:
    """Metrics of the seed's (``same``) source and the primary configuration."""
    m = _tsv(files["metrics"])
    if not len(m):
        raise ZhuntError(str(files["metrics"]), "no configurations")
    if "source" in m.columns:
        m = m[m["source"] == "same"] if (m["source"] == "same").any() else m
    return m, _flagged(m, "primary", files["metrics"]).to_dict()


def _overall(verdicts: Sequence[str]) -> str:
    """The seed's rule: the strongest verdict over configurations (zhunt.experiments.patching.overall_verdict);
    exploratory, the headline is the primary configuration's own verdict."""
    from zhunt.experiments.patching import overall_verdict

    v = [x for x in verdicts if isinstance(x, str)]
    return overall_verdict(v) if v else "n/a"


def patching_sentence(p: Mapping) -> str:
    """Seed 000's sentence filled in from one configuration's metrics."""
    return (f"Z-patching changes answers {_pct(p.get('z_answer_change'))} of the time while preserving language "
            f"{_pct(p.get('z_language_preservation'))} of the time, vs Z⊥-patching which changes answers "
            f"{_pct(p.get('zperp_answer_change'))} and disrupts language {_pct(p.get('zperp_language_disruption'))}")


def _where(p: Mapping) -> str:
    return f"L{int(p['layer'])}, k={int(p['k'])}, {p['alignment']}, {p['direction']}"


# --------------------------------------------------------------------------- measures (one line each)


def _m_patching(files, wc):
    m, p = _patching(files)
    prim = m[m["direction"] == p["direction"]]
    out = (f"primary ({_where(p)}, {int(p['n_problems'])} problems, pre-registered): {p['verdict']} "
           f"(strongest of {len(prim)} configurations, uncorrected: {_overall(prim['verdict'])}). "
           f"{patching_sentence(p)}; random subspaces {_pct(p.get('random_answer_change'))}")
    full = files["metrics"]
    allm = _tsv(full)
    if "source" in allm.columns and (allm["source"] == "donor").any():
        d = allm[(allm["source"] == "donor") & (allm["direction"] == p["direction"])]
        out += f"; donor design primary {_flagged(d, 'primary', full)['verdict']}"
    return out


def _interchange(files: Mapping) -> tuple[pd.DataFrame, dict]:
    """The primary rows of ``patching/subspaces.tsv`` and their judgement, by the gather's own
    :func:`zhunt.report.patching_render.judge_interchange` (verdict, criteria, positive control)."""
    from zhunt.report.patching_render import judge_interchange

    t = _tsv(files["subspaces"])
    t = t.assign(primary=t["primary"].astype(str) == "True")
    prim = t[t["primary"]].set_index("subspace")
    if not len(prim):
        raise ZhuntError(str(files["subspaces"]), "no primary cell")
    # the primary ms_ablation row is the one at study.patching.ms_ablation.primary_lam
    primary_lam = float(prim.loc["ms_ablation", "lam"]) if "ms_ablation" in prim.index else math.nan
    return prim, judge_interchange(t, "the primary cell", primary_lam)


def _m_patching_interchange(files, wc):
    prim, judged = _interchange(files)
    verdict, pc = judged["verdict"], judged["positive_control"]
    r = prim.iloc[0]
    ci = lambda s, m: f"{prim.loc[s, m]:.2f} [{prim.loc[s, m + '_lo']:.2f}, {prim.loc[s, m + '_hi']:.2f}]"  # noqa
    return (f"primary (site {r['site']}, L{int(r['layer'])}, k={int(r['k'])}, {r['alignment']}, {r['direction']}): "
            f"{verdict}; IIA Z {ci('z', 'iia')} vs energy-matched random {ci('random_matched', 'iia')} "
            f"(n = {int(prim.loc['z', 'n_iia'])}); NPE Z {ci('z', 'npe')} vs {ci('random_matched', 'npe')}; "
            f"positive control {'holds' if pc['holds'] else 'fails' if pc['testable'] else 'not testable'}")


def _m_patching_table(files, wc):
    cfg = getattr(wc, "config", None)
    tables = Path(files["tables"])
    path = tables / f"table_{cfg}.tsv" if cfg else None
    if path is None or not path.exists():
        n = len(list(tables.glob("table_*.tsv")))
        return f"{n} per-configuration tables"
    t = _tsv(path)
    cols = [c for c in t.columns if c.startswith("answer: ")]
    base = t.get("answer: none")
    changed = {c[8:]: float((t[c].astype(str) != base.astype(str)).mean()) for c in cols
               if base is not None and c != "answer: none"}
    return f"{len(t)} problems; answer changed: " + ", ".join(f"{k} {_pct(v)}" for k, v in changed.items())


def _m_decomposition(files, wc):
    R = _tsv(files["decomposition"])
    k = R["k"].max()
    pooled = R[(R["k"] == k) & (R["lang"] == "all")]
    top = pooled.loc[pooled["R"].idxmax()]
    zd = pooled[pooled["label"] == "Z-dominated"]["layer"].astype(int).tolist()
    zp = pooled[pooled["label"] == "Z⊥-dominated"]["layer"].astype(int).tolist()
    diff = R[(R["k"] == k) & (R["lang"] == "zh-en")]
    zh_en = ""
    if "p_holm" in R.columns and len(diff):
        zh_en = "; zh − en (permutation test, Holm): " + (", ".join(
            f"L{int(r['layer'])} {r['label']} (p = {_f(r['p_holm'], 2)})" for _, r in diff.iterrows()
            if r["label"] != "no difference") or "no layer differs")
    return (f"k={int(k)}: max pooled R = {_f(top['R'])} at layer {int(top['layer'])} "
            f"({_f(top['enrichment'], 2)}x random); R > 1 at {int(pooled['R_gt_1'].astype(bool).sum())}/"
            f"{len(pooled)} layers; Z-dominated layers {zd or 'none'}, Z⊥-dominated {zp or 'none'}" + zh_en)


def _ard_primary(files) -> int | None:
    """The ARD primary layer: ``layer`` of ``ard/headline.tsv`` (the held-out test's run, which
    rule ard_heldout fits at the primary layer); ``None`` when that table is missing."""
    head = Path(files["ard_headline"])
    return int(_tsv(head)["layer"].iloc[0]) if head.exists() else None


def _ard_rows(files, objective="wellposed") -> pd.DataFrame:
    # Cold start (log ell = 0): the warm start is seeded from the SVD mask's z-energy, so its
    # overlap with SVD-Z is partly there by construction.
    s = _tsv(files["ard_summary"])
    sel = s[(s["objective"] == objective) & (s["init"] == "cold") & (s["basis"] == "coord")]
    if not len(sel):
        sel = s[s["objective"] == objective]
    if not len(sel):
        return sel
    from zhunt.activations.ard import middle_lambda

    return sel[sel["lambda"] == middle_lambda(sel["lambda"].unique())]


def _m_ard_size(files, wc):
    sel = _ard_rows(files).sort_values("layer")
    col = "z_size" if "z_size" in sel.columns else "z_size_median"
    lam = sel["lambda"].iloc[0]
    return (f"well-posed objective, cold start, λ={_f(lam)}: size of Z = "
            + ", ".join(f"L{int(r['layer'])}: {int(r[col])}/{int(r['d'])}" for _, r in sel.iterrows()))


def _m_ard_headline(files, wc):
    h = _tsv(files["ard_headline"]).iloc[0]
    return (f"layer {int(h['layer'])} ({h['objective']}, {h['basis']}, {h['init']} start, λ={_f(h['lambda'])}): "
            f"size of Z = {int(h['z_size'])}/{int(h['d'])} ({h['z_rule']}; half-data refit {int(h['z_size_fit'])}); "
            f"held-out kernel separates {h['heldout_verdict']} (language p = {_f(h['p_language'], 2)}, "
            f"problem p = {_f(h['p_problem'], 2)})")


def _m_ard_spectrum(files, wc):
    sel = _ard_rows(files)
    layer = _ard_primary(files)
    row = sel[sel["layer"] == layer].iloc[0] if layer is not None and (sel["layer"] == layer).any() else sel.iloc[0]
    from zhunt.activations.ard import is_bimodal

    bimodal = is_bimodal(row["bic_gain"], row["ashman_d"])
    return (f"layer {int(row['layer'])} (well-posed, cold start, λ={_f(row['lambda'])}): "
            f"{'bimodal' if bimodal else 'not clearly bimodal'} (Ashman D = {_f(row['ashman_d'])}, "
            f"BIC gain {_f(row['bic_gain'])}); SVD–ARD overlap {_pct(row['overlap_svd'])} vs chance "
            f"{_pct(row['overlap_chance'])} (p = {_f(row['overlap_p'], 2)})")


def _m_ard_collapse(files, wc):
    s = _tsv(files["ard_summary"])
    seed = s[s["objective"] == "seed"]
    well = s[s["objective"] == "wellposed"]
    return (f"seed objective: median log10 lengthscale grows {_f(seed['growth_per_100_steps'].median())} per 100 "
            f"steps, {_pct(seed['frac_grown'].median())} of axes grow; well-posed: "
            f"{_f(well['growth_per_100_steps'].median())} per 100 steps")


def _m_ard_layer(files, wc):
    layer = int(getattr(wc, "layer"))
    t = _primary_site(_tsv(files["ard_layer"]))
    sel = t[(t["objective"] == "wellposed") & (t["init"] == "cold") & (t["basis"] == "coord")]
    sel = sel if len(sel) else t
    col = "z_size" if "z_size" in sel.columns else "n_active_median"
    return f"layer {layer}, well-posed cold start: size of Z " + ", ".join(
        f"λ={_f(r['lambda'])}: {int(r[col])}/{int(r['d'])}" for _, r in sel.iterrows())


def _m_ard_heldout(files, wc):
    t = _tsv(files["ard_heldout"])
    parts = [f"{r['test']} MMD p = {_f(r['p_value'], 2)}" for _, r in t.iterrows()
             if r.get("kernel") == "learned"] or [f"{r['test']} p = {_f(r['p_value'], 2)}" for _, r in t.iterrows()]
    return f"layer {int(t['layer'].iloc[0])}, held-out permutation tests: " + "; ".join(parts)


def _primary_site(t: pd.DataFrame) -> pd.DataFrame:
    """The rows of a table's primary site (its first rows' ``site``; producers write it first)."""
    return t[t["site"] == t["site"].iloc[0]] if "site" in t.columns and len(t) else t


def _bridge_primary(files) -> pd.Series:
    b = _primary_site(_tsv(files["bridge"]))
    first = b.iloc[0]
    sel = b[(b["layer"] == first["layer"]) & (b["direction"] == first["direction"]) & (b["level"] == "pooled")]
    return sel


def _m_bridge(files, wc):
    sel = _bridge_primary(files)
    best = sel.loc[sel["r2_loo"].idxmax()]
    lst = sel[(sel["estimator"] == "lstsq") & (sel["k"] == best["k"])]
    orth = lst["orth_err"].iloc[0] if len(lst) else float("nan")
    return (f"L{int(best['layer'])} {best['direction']}: best leave-one-out R² = {_f(best['r2_loo'])} "
            f"({best['estimator']}, k={int(best['k'])}; in-sample {_f(best['r2_in'])}, null q95 "
            f"{_f(best['r2_loo_null_q95'])}, p = {_f(best['p_loo'], 2)}); lstsq orthogonality error {_f(orth)}")


def _m_bridge_spectra(files, wc):
    sel = _bridge_primary(files)
    lst = sel[sel["estimator"] == "lstsq"]
    return "lstsq map: " + "; ".join(
        f"k={int(r['k'])}: condition number {_f(r['kappa'])}, orthogonality error {_f(r['orth_err'])}"
        for _, r in lst.iterrows())


def _m_behaviour(files, wc):
    s = _tsv(files["behaviour"])
    parts = [f"{r['lang']} {_pct(r['accuracy'])} [{_pct(r['ci_lo'])}–{_pct(r['ci_hi'])}]" for _, r in s.iterrows()]
    zh = s[s["lang"] == "zh"]
    test = ""
    if len(zh) and "mcnemar_p" in s:
        r = zh.iloc[0]
        verdict = f"{r['paired_verdict']}, " if "paired_verdict" in s else ""
        test = f"; zh vs en: {verdict}McNemar p = {_f(r['mcnemar_p'], 2)} (seed band: {r.get('band', 'n/a')})"
    return "accuracy " + ", ".join(parts) + test


def _m_phase2(files, wc):
    s = _primary_site(_tsv(files["phase2"]))
    s = s[s["tokens"] == "all"] if "tokens" in s.columns else s

    def row(pooling):
        r = s[(s["pooling"] == pooling) & (s["layer"].astype(str) == "all") & (s["kind"] == "all")]
        return r.iloc[0] if len(r) else None

    mean, last = row("mean"), row("last")
    out = []
    if mean is not None:
        out.append(f"mean pooling: ratio_Z < ratio_Z⊥ in {int(mean['n_Z_better'])}/{int(mean['n_configs'])} "
                   f"configs, language energy in Z below k/d in {int(mean['n_lang_energy_below'])}; best L"
                   f"{int(mean['best_layer'])} {mean['best_kind']} k={int(mean['best_k'])}: ratio_Z "
                   f"{_f(mean['best_ratio_Z'])} vs ratio_Z⊥ {_f(mean['best_ratio_Zperp'])}")
    if last is not None:
        out.append(f"last-token pooling: ratio_Z < ratio_Z⊥ in {int(last['n_Z_better'])}/{int(last['n_configs'])}")
    return "; ".join(out) or "no summary rows"


def _m_datadriven(files, wc):
    t = _primary_site(_tsv(files["datadriven"]))
    sel = t[(t["pooling"] == "mean") & (t["kind"] == "multihead")] if "kind" in t else t
    sel = sel if len(sel) else t
    v = sel["E_Ms_in_Z_over_chance"]
    return (f"energy of the data-driven language subspace inside Z: {_f(v.min(), 2)}–{_f(v.max(), 2)}x chance "
            f"(mean pooling, {len(sel)} layer×k rows)")


def _digit_rows(files) -> dict:
    """The digit-confound row shown per stage: primary site, first layer, mean pooling, Z's advantage
    over Z⊥ at the largest k (Phase 2) / the zh->en (first) direction (NN retrieval)."""
    out = {}
    p2 = _primary_site(_tsv(files["digit_phase2"]))
    sel = p2[(p2["measure"] == "z_advantage") & (p2["pooling"] == "mean") & (p2["kind"] == "multihead")]
    sel = sel[(sel["layer"] == sel["layer"].iloc[0]) & (sel["k"] == sel["k"].max())]
    out["phase2"] = sel.iloc[0]
    nn = _tsv(files["digit_theory"])
    out["nn_retrieval"] = nn.iloc[0]
    return out


def _m_digit_confound(files, wc):
    parts = []
    for stage, r in _digit_rows(files).items():
        what = (f"Phase 2 advantage of Z over Z⊥, max(1 − ratio_Z/ratio_Z⊥, 0) (L{int(r['layer'])}, "
                f"k={int(r['k'])})" if stage == "phase2"
                else f"NN retrieval {r['src_lang']}→{r['tgt_lang']} accuracy above chance (hidden index "
                     f"{int(r['hidden_index'])})")
        parts.append(f"{what}: {_f(r['value'])} at site {r['site']}, {_f(r['value_embedding'])} at the embedding, "
                     f"{_f(r['value_no_numerals'])} without numeral tokens; "
                     + (f"surviving both controls {_pct(r['frac_both'])}" if r["value"] > 0
                        else "no signal above chance at the site to explain"))
    return "; ".join(parts)


def _m_structure_rank(files, wc):
    s = _tsv(files["effective_rank"])
    b = _tsv(files["bottleneck"]).iloc[0]
    return (f"attention effective rank vs depth: Spearman ρ = {_f(_stat(s, 'spearman_attn_vs_depth'), 2)}; "
            f"at the predicted bottleneck L{int(b['predicted_layer'])}: {_f(b['attn_eff_rank_mean'])} ± "
            f"{_f(b['attn_eff_rank_std'], 2)} over heads (k={int(b['k'])}, d={int(b['d'])})")


def _m_grassmann(files, wc):
    a = _tsv(files["grassmann"])
    top = a.loc[a["sim"].idxmax()]
    rest = a.drop(index=top.name)["sim"]
    ratio = top["sim"] / rest.max() if len(rest) and rest.max() > 0 else float("nan")
    return (f"most similar adjacent pair L{int(top['layer'])}↔L{int(top['next'])}: {_f(top['sim'])} "
            f"({_f(ratio, 2)}x the next-highest pair)")


def _m_ffn(files, wc):
    b = _tsv(files["bottleneck"]).iloc[0]
    f = _tsv(files["ffn"])
    low = f.loc[f["ratio"].idxmin()]
    return (f"FFN alignment at L{int(b['predicted_layer'])}: {_f(b['ffn_ratio'])}x chance; lowest "
            f"{_f(low['ratio'])}x at L{int(low['layer'])}")


def _m_phases(files, wc):
    b = _tsv(files["bottleneck"]).iloc[0]
    return (f"phases {b['phases']} (encode ≤ L{int(b['encode_last_layer'])}, decode ≥ L"
            f"{int(b['decode_first_layer'])}); sharpest similarity drop after L{int(b['max_drop_layer'])} "
            f"({_f(b['max_drop'])}); predicted bottleneck L{int(b['predicted_layer'])}, "
            f"{'confirmed' if str(b['confirmed_by_drop']) == 'True' else 'not confirmed'} by the following drop")


def _verdict_row(path) -> pd.Series:
    """The first row of a verdict TSV (its ``verdict`` column is the label)."""
    t = _tsv(path)
    if not len(t) or "verdict" not in t.columns:
        raise ZhuntError(str(path), "no verdict")
    return t.iloc[0]


def _m_families(files, wc):
    return f"verdict: {_verdict_row(files['families'])['verdict']}"


def _m_qk(files, wc):
    r = _verdict_row(files["qk"])
    return (f"verdict: {r['verdict']}; mean operator cosine to the anchor (anchor excluded) "
            f"{float(r['mean_cos_to_anchor_excl']):+.4f}")


def _theory_line(files, template: str) -> str:
    """``template`` filled from ``theory/theory_summary.tsv``: ``{f:NAME}`` is statistic NAME to 3
    significant digits, ``{pct:NAME}`` as a percentage, ``{note:NAME}`` the note of a ``verdict:*``
    row, ``{every:NAME}`` "every" when the statistic is 1, else "not every"."""
    s = _tsv(files["theory"])
    fill = {"f": lambda n: _f(_stat(s, n)), "pct": lambda n: _pct(_stat(s, n)), "note": lambda n: _verdict_note(s, n),
            "every": lambda n: "every" if _stat(s, n) == 1 else "not every"}
    return re.sub(r"\{(\w+):([\w:]+)\}", lambda m: fill[m.group(1)](m.group(2)), template)


def _verdict_note(summary: pd.DataFrame, name: str) -> str:
    """The note of a ``verdict:*`` row of theory_summary.tsv: "label; rule: ..." (or "n/a")."""
    row = summary[summary["statistic"] == name]
    return str(row["note"].iloc[0]) if len(row) else "n/a"


def _m_snr(files, wc):
    return _theory_line(files, "SNR {f:snr_first} → {f:snr_last}; falls at {every:snr_monotone} layer "
                               "({f:snr_violations} violations); Theorem-2 condition holds at "
                               "{f:theorem2_condition_holds} layers; verdicts {note:verdict:snr} | "
                               "{note:verdict:theorem2}")


def _m_gram(files, wc):
    return _theory_line(files, "layer contributions: mean off-diagonal cosine {f:gram_offdiag_mean_abs_cos} "
                               "(max {f:gram_offdiag_max_abs_cos}); cross terms {pct:cross_term_fraction}")


def _m_nn(files, wc):
    s = _tsv(files["theory"])
    rows = s[s["statistic"].astype(str).str.match(r"L_star:[a-z]+:h$")]
    parts = [f"{r['statistic'].split(':')[1]} {_f(r['value'])}" for _, r in rows.iterrows()]
    return "alignment depth L* (hidden states): " + (", ".join(parts) if parts else "n/a")


def _m_crossmap(files, wc):
    return _theory_line(files, "mid-depth held-out R²: Procrustes {f:crossmap_procrustes_r2_mid}, affine "
                               "{f:crossmap_affine_r2_mid} (median condition number {f:crossmap_affine_kappa_mid}); "
                               "verdict {note:verdict:crossmap}")


def _m_coint(files, wc):
    return _theory_line(files, "median cointegration rank {f:cointegration_rank_median} (tabulated critical values: "
                               "{f:cointegration_rank_tabulated_median}); median |α| ratio "
                               "{f:cointegration_alpha_ratio_median}; verdict {note:verdict:cointegration}")


def _m_garch(files, wc):
    from zhunt.activations.garch import GARCH_RULE, garch_model_verdict

    g = _tsv(files["garch"])
    conv = g[g["converged"].astype(str) == "True"]
    sig = conv["beta_significant"].astype(str).eq("True").sum()
    parts = [f"GARCH(1,1) on ||δ_l||² fitted on {len(conv)}/{len(g)} series; β significant in {int(sig)}"
             + (f" (median β {_f(conv['beta'].median())})" if len(conv) else "")]
    for col, name in (("verdict", "update difference"), ("output_verdict", "output difference (before)")):
        if col in g:
            m = garch_model_verdict(g[col].astype(str))
            parts.append(f"{name}: {m['n_clustered']}/{m['n_fitted']} clustered, verdict {m['verdict']}")
    return "; ".join(parts) + f". Rule: {GARCH_RULE}"


def _m_toy(files, wc):
    t = _tsv(files["toy"])
    return f"max relative error of σ vs √ρ: {_f(t['rel_err'].max())} over {len(t)} directions"


def _m_training(files, wc):
    t = _tsv(files["training"])
    t = t[t["op"] == "all"]
    return "held-out exact match " + ", ".join(f"{r['lang']} {float(r['exact_match']):.1%}" for _, r in t.iterrows())


def _m_summary(files, wc):
    h = json.loads(_text(files["summary_json"]))
    return ", ".join(f"{t}: {h['tiers'][t]}" for t in ("minimum", "strong", "transformative"))


def _m_models(files, wc):
    t = _tsv(files["models"])
    if "reference" in t.columns:  # the quoted seed column is not an analysed model
        t = t[t["reference"].astype(str) != "True"]
    return f"{len(t)} models: " + ", ".join(f"{r['model']} ({r['patching_verdict']})" for _, r in t.iterrows())


def _m_layer_scores(files, wc):
    t = _tsv(files["layer_scores"])
    b = _flagged(t, "predicted", files["layer_scores"])
    return (f"predicted L{int(b['layer'])} of {len(t)}: head eff. rank {_f(b['attn_eff_rank_mean'])} "
            f"(CV {_f(b['attn_eff_rank_cv'])}), FFN {_f(b['ffn_ratio'])}x chance, drop after {_f(b['drop_after'])}")


def _m_layer_sweep(files, wc):
    t = _tsv(files["layer_sweep"])
    t = t[t["pooling"] == "mean"]
    best = t.loc[t["rel_ratio"].idxmin()]
    below = int((t["ratio_Z"] < t["ratio_rand_lo"]).sum())
    return (f"mean pooling, site {best['site']}, k={int(best['k'])}: lowest ratio_Z/ratio_Z⊥ at L{int(best['layer'])} "
            f"({_f(best['rel_ratio'])}); ratio_Z below the random 95% band at {below}/{len(t)} layers")


def _m_layer_causal(files, wc):
    t = _tsv(files["layer_causal"])
    b = t.loc[t["iia"].idxmax()] if t["iia"].notna().any() else t.iloc[0]
    n = t.loc[t["npe"].idxmax()] if t["npe"].notna().any() else t.iloc[0]
    return (f"{b['direction']}, mean source, site {b['site']}, k={int(b['k'])}, {len(t)} layers: highest IIA at "
            f"L{int(b['layer'])} ({_f(b['iia'])} [{_f(b['iia_lo'])}, {_f(b['iia_hi'])}], {int(b['n_iia'])} pairs), "
            f"highest NPE at L{int(n['layer'])} ({_f(n['npe'])})")


def _m_layer_das(files, wc):
    t = _tsv(files["layer_das"])
    das, z = t[t["subspace"] == "das"], t[t["subspace"] == "z"].set_index("layer")
    if das.empty or not das["iia"].notna().any():
        return f"no DAS fit ({len(das)} layers; no diverging train pair)"
    b = das.loc[das["iia"].idxmax()]
    return (f"{len(das)} layers, held-out pairs {int(b['n_pairs'])}, {int(b['n_train'])} train pairs: highest DAS IIA "
            f"at L{int(b['layer'])} ({_f(b['iia'])} [{_f(b['iia_lo'])}, {_f(b['iia_hi'])}], Z there "
            f"{_f(z.loc[int(b['layer']), 'iia'])}, overlap with Z {_f(b['overlap_z'])})")


def _m_layer_comparison(files, wc):
    p = _flagged(_tsv(files["layers"]), "primary", files["layers"])
    return (f"{p['verdict']}: predicted L{int(p['predicted_layer'])}, data-best L{_f(p['data_best_layer'])} "
            f"(distance {_f(p['distance_frac'])} of depth), rho {_f(p['rho'])}, shift-permutation p {_f(p['p_shift'])}")


def _m_layer_models(files, wc):
    t = _tsv(files["layer_prediction"])
    return "; ".join(f"{r['model']}: L{r['predicted_layer']} vs L{_f(r['data_best_layer'])} ({r['verdict']})"
                     for _, r in t.iterrows())


#: Measured-result functions of the report items: ``name -> f(files, wildcards) -> str``
#: (``files``: :func:`model_files`, or the summary rule's named inputs).
MEASURES: dict[str, Callable] = {
    "patching": _m_patching, "patching_table": _m_patching_table, "decomposition": _m_decomposition,
    "patching_interchange": _m_patching_interchange,
    "ard_size": _m_ard_size, "ard_spectrum": _m_ard_spectrum, "ard_collapse": _m_ard_collapse,
    "ard_layer": _m_ard_layer, "ard_heldout": _m_ard_heldout, "bridge": _m_bridge,
    "bridge_spectra": _m_bridge_spectra, "behaviour": _m_behaviour, "phase2": _m_phase2,
    "digit_confound": _m_digit_confound,
    "datadriven": _m_datadriven, "effective_rank": _m_structure_rank, "grassmann": _m_grassmann,
    "ffn": _m_ffn, "phases": _m_phases, "families": _m_families, "qk": _m_qk, "snr": _m_snr,
    "gram": _m_gram, "nn": _m_nn, "crossmap": _m_crossmap, "cointegration": _m_coint, "garch": _m_garch,
    "toy": _m_toy, "training": _m_training, "summary": _m_summary, "models": _m_models,
    "layer_scores": _m_layer_scores, "layer_sweep": _m_layer_sweep, "layer_causal": _m_layer_causal,
    "layer_das": _m_layer_das, "layer_comparison": _m_layer_comparison,
    "layer_models": _m_layer_models,
}
MEASURES["ard_headline"] = _m_ard_headline


def measured(item: str, model: str | None = None, root: str | Path = "results", wildcards=None, *,
             files: Mapping | None = None) -> str:
    """One-line measured result of a report item, read from the TSVs.

    Parameters
    ----------
    item : str
        A key of :data:`MEASURES`.
    model : str, optional
        The model (``None`` for model-independent items).
    root : str or Path
        The results directory.
    wildcards : object, optional
        The job's wildcards (``layer`` for ARD layers, ``config`` for patching tables).
    files : mapping, optional
        The files to read (:func:`model_files` keys); default ``model_files(root, model, wildcards)``.

    Returns
    -------
    str
        The measured result; ``"not available: <reason>"`` when an input is
        missing or malformed. Braces are removed (Snakemake would read them as
        wildcards in a label).
    """
    if item not in MEASURES:
        raise ZhuntError("report", f"unknown measured item {item!r}; known: {', '.join(sorted(MEASURES))}")
    try:
        text = MEASURES[item](files if files is not None else model_files(root, model, wildcards), wildcards)
    except ZhuntError as exc:
        text = f"not available: {exc}"
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        text = f"not available: {exc.__class__.__name__} {exc}"
    return text.replace("{", "(").replace("}", ")")


# --------------------------------------------------------------------------- checklist


@dataclass
class Check:
    """One item of the seed-000 checklist.

    Attributes
    ----------
    tier : str
        ``minimum``, ``strong`` or ``transformative``.
    item : str
        The checklist item, in our words.
    ok : bool
        Whether the outputs meet it (decided by code).
    evidence : str
        The numbers it rests on.
    artifact : str
        Path of the artifact (relative to the working directory) that shows it.
    """

    tier: str
    item: str
    ok: bool
    evidence: str
    artifact: str


def _check(tier, item, artifact, fn, files) -> Check:
    try:
        ok, evidence = fn(files)
    except ZhuntError as exc:
        ok, evidence = False, f"not available: {exc}"
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        ok, evidence = False, f"not available: {exc.__class__.__name__} {exc}"
    return Check(tier, item, bool(ok), evidence, artifact)


def _verdict_per_layer(m: pd.DataFrame, direction: str) -> dict:
    prim = m[m["direction"] == direction]
    return {int(lay): _overall(g["verdict"]) for lay, g in prim.groupby("layer")}


def _check_table(files):
    m, p = _patching(files)
    n = int(p["n_problems"])
    tables = sorted(Path(files["tables"]).glob("table_*.tsv"))
    return n >= MIN_PROBLEMS and bool(tables), f"{n} problems in {len(tables)} tables (need ≥ {MIN_PROBLEMS})"


def _check_rplot(files):
    R = _tsv(Path(files["decomposition"]))
    ok = Path(files["figures"]["decomposition_R"]).exists() and len(R) > 0
    return ok, f"{R['layer'].nunique()} layers" if ok else "figure or table missing"


def _check_sentence(files):
    _, p = _patching(files)
    vals = [p.get(c) for c in ("z_answer_change", "z_language_preservation", "zperp_answer_change",
                               "zperp_language_disruption")]
    ok = all(v is not None and not math.isnan(float(v)) for v in vals)
    return ok, f"“{patching_sentence(p)}” ({_where(p)})"


def _check_spectrum(files):
    ok = Path(files["figures"]["ard_spectrum"]).exists()
    return ok, measured("ard_spectrum", files=files).split(";")[0] if ok else "figure missing"


def _check_overlap(files):
    ok = _ard_rows(files)["overlap_svd"].notna().any()
    return ok, measured("ard_spectrum", files=files).split("; ", 1)[-1]


def _check_bridge(files):
    return _bridge_primary(files)["r2_loo"].notna().any(), measured("bridge", files=files)


def _check_layers(files):
    m, p = _patching(files)
    per = _verdict_per_layer(m, p["direction"])
    good = [v for v in per.values() if _VERDICT_RANK.get(v, -1) >= _VERDICT_RANK["partial success"]]
    ok = len(per) >= 2 and len(set(per.values())) == 1 and len(good) == len(per)
    return ok, ", ".join(f"L{k}: {v}" for k, v in per.items())


def _check_ot(files):
    m, p = _patching(files)
    o = m[(m["alignment"] == "ot") & (m["direction"] == p["direction"])]
    return len(o) > 0, (f"OT rows: {len(o)}, strongest {_overall(o['verdict'])}" if len(o) else "no OT rows")


def _check_phases(files):
    R = _tsv(Path(files["decomposition"]))
    k = R["k"].max()
    pooled = R[(R["k"] == k) & (R["lang"] == "all")].sort_values("layer")
    return has_phases(pooled["label"]), measured("decomposition", files=files)


def _check_orth(files):
    sel = _bridge_primary(files)
    lst = sel[sel["estimator"] == "lstsq"]
    r = lst.loc[lst["r2_loo"].idxmax()]
    ok = bridge_verdict(r["orth_err"], r["r2_loo"]) == "approximately orthogonal"
    return ok, (f"lstsq k={int(r['k'])}: orthogonality error {_f(r['orth_err'])} (need ≤ {ORTH_TOL}), "
                f"LOO R² {_f(r['r2_loo'])} (need ≥ {BRIDGE_R2_OK})")


def checklist(files: Mapping) -> list[Check]:
    """Evaluate seed 000's "done" checklist on one model's outputs.

    Parameters
    ----------
    files : mapping
        The model's files (:func:`model_files` keys: the summary rule's named inputs).

    Returns
    -------
    list of Check
        Minimum (patching table for >= :data:`MIN_PROBLEMS` problems, the R(k)
        plot, the filled-in patching sentence), strong (ARD spectrum, SVD–ARD
        overlap, bridge R²) and transformative (same verdict at both layers,
        OT-aligned patching run, R(k) phases, approximately orthogonal bridge:
        orthogonality error <= :data:`ORTH_TOL` with LOO R² >= :data:`BRIDGE_R2_OK`).
    """
    fig = files["figures"]
    try:
        _, p = _patching(files)
        primary_table = str(Path(files["tables"]) / (f"table_L{int(p['layer'])}_k{int(p['k'])}_{p['alignment']}_"
                                                     f"{direction_slug(p['direction'])}.tsv"))
    except (ZhuntError, KeyError, ValueError):
        primary_table = str(files["metrics"])
    metrics = str(files["metrics"])
    return [
        _check("minimum", f"Patching table filled in for ≥ {MIN_PROBLEMS} problems", primary_table, _check_table,
               files),
        _check("minimum", "R(k) vs layer plot exists", str(fig["decomposition_R"]), _check_rplot, files),
        _check("minimum", "The patching sentence can be stated", metrics, _check_sentence, files),
        _check("strong", "ARD lengthscale spectrum exists", str(fig["ard_spectrum"]), _check_spectrum, files),
        _check("strong", "SVD-Z / ARD-Z overlap quantified", str(files["ard_summary"]), _check_overlap, files),
        _check("strong", "Bridge R² exists", str(files["bridge"]), _check_bridge, files),
        _check("transformative", "Results hold at both patching layers", metrics, _check_layers, files),
        _check("transformative", "OT-aligned patching tried", metrics, _check_ot, files),
        _check("transformative", "R(k) reveals encode / reason / decode phases", str(fig["decomposition_R"]),
               _check_phases, files),
        _check("transformative", "Bridge approximately orthogonal", str(fig["bridge_spectra"]), _check_orth, files),
    ]


def _tiers(checks: Sequence[Check]) -> dict:
    out = {}
    for tier in ("minimum", "strong", "transformative"):
        sel = [c for c in checks if c.tier == tier]
        out[tier] = f"{sum(c.ok for c in sel)}/{len(sel)}"
    return out


# --------------------------------------------------------------------------- headline numbers


def headline(files: Mapping, model: str) -> dict:
    """Numbers compared across models, read from the model's ``files`` (:func:`model_files` keys);
    a stage whose files are missing leaves its numbers out."""
    out: dict = {"model": model}

    def put(fn):
        try:
            out.update(fn())
        except (ZhuntError, KeyError, IndexError, ValueError, TypeError):
            pass

    def bottleneck():
        b = _tsv(files["bottleneck"]).iloc[0]
        return {"num_layers": int(b["num_layers"]), "d": int(b["d"]),
                "bottleneck_layer": int(b["predicted_layer"]), "phases": str(b["phases"])}

    def patch():
        m, p = _patching(files)
        allm = _tsv(files["metrics"])
        donor = None
        if "source" in allm.columns and (allm["source"] == "donor").any():
            donor = _flagged(allm[(allm["source"] == "donor") & (allm["direction"] == p["direction"])], "primary",
                             files["metrics"])["verdict"]
        return {"patching_verdict": p["verdict"],
                "patching_strongest": _overall(m[m["direction"] == p["direction"]]["verdict"]),
                "patching_primary": _where(p), "n_problems": int(p["n_problems"]),
                "z_answer_change": float(p["z_answer_change"]), "zperp_answer_change": float(p["zperp_answer_change"]),
                "z_language_preservation": float(p["z_language_preservation"]),
                "zperp_language_disruption": float(p["zperp_language_disruption"]),
                "random_answer_change": float(p.get("random_answer_change", float("nan"))),
                "donor_verdict": donor}

    def rk():
        R = _tsv(files["decomposition"])
        pooled = R[(R["k"] == R["k"].max()) & (R["lang"] == "all")]
        top = pooled.loc[pooled["R"].idxmax()]
        return {"max_R": float(top["R"]), "max_R_layer": int(top["layer"])}

    def ard():
        sel = _ard_rows(files)
        layer = _ard_primary(files)
        row = sel[sel["layer"] == layer].iloc[0] if layer is not None and (sel["layer"] == layer).any() \
            else sel.iloc[0]
        col = "z_size" if "z_size" in sel.columns else "z_size_median"
        out = {"ard_layer": int(row["layer"]), "z_size": int(row[col]), "svd_ard_overlap": float(row["overlap_svd"])}
        head = Path(files["ard_headline"])
        if head.exists():
            h = _tsv(head).iloc[0]
            out.update(ard_layer=int(h["layer"]), z_size=int(h["z_size"]))
        return out

    def bridge():
        sel = _bridge_primary(files)
        best = sel.loc[sel["r2_loo"].idxmax()]
        return {"bridge_r2_loo": float(best["r2_loo"]), "bridge_estimator": str(best["estimator"])}

    def behaviour():
        s = _tsv(files["behaviour"])
        return {f"accuracy_{r['lang']}": float(r["accuracy"]) for _, r in s.iterrows() if r["lang"] in ("en", "zh")}

    def interchange():
        prim, judged = _interchange(files)
        return {"interchange_verdict": judged["verdict"], "iia_z": float(prim.loc["z", "iia"]),
                "iia_random_matched": float(prim.loc["random_matched", "iia"]), "npe_z": float(prim.loc["z", "npe"])}

    def digits():
        rows = _digit_rows(files)
        return {"digit_phase2_frac_both": float(rows["phase2"]["frac_both"]),
                "digit_nn_frac_both": float(rows["nn_retrieval"]["frac_both"])}

    def layers():
        p = _flagged(_tsv(files["layers"]), "primary", files["layers"])
        return {"layer_data_best": None if pd.isna(p["data_best_layer"]) else int(p["data_best_layer"]),
                "layer_distance_frac": float(p["distance_frac"]), "layer_rho": float(p["rho"]),
                "layer_p": float(p["p_shift"]), "layer_verdict": str(p["verdict"])}

    for fn in (bottleneck, patch, rk, ard, bridge, behaviour, interchange, digits, layers):
        put(fn)
    out["tiers"] = _tiers(checklist(files))
    return out


# --------------------------------------------------------------------------- pages

_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em;max-width:70em;color:#222;
font-size:14px;line-height:1.45}h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.4em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.yes,td.no{white-space:nowrap;font-weight:600}td.yes{color:#1a7f37}
td.no{color:#b42318}
.sentence{background:#f6f8fa;border-left:4px solid #4a7;padding:.6em 1em}code{font-size:.9em}
.muted{color:#666;font-size:.9em}"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _link(href: Callable[[str], str] | None, artifact: str) -> str:
    target = href(artifact) if href else artifact
    return f"<a href=\"{html.escape(str(target))}\" target=\"_blank\"><code>{html.escape(artifact)}</code></a>"


def model_page(files: Mapping, model: str, checks: Sequence[Check], head: Mapping,
               href: Callable[[str], str] | None = None) -> str:
    """The per-model summary page (HTML): the checklist and the headline numbers.

    Parameters
    ----------
    files : mapping
        The model's files (:func:`model_files` keys: the summary rule's named inputs).
    model : str
        The model.
    checks : sequence of Check
        From :func:`checklist`.
    head : mapping
        From :func:`headline`.
    href : callable, optional
        Maps an artifact path to a link (``snakemake.report_href`` inside the
        report); default: the path itself.
    """
    rows = []
    for c in checks:
        mark = "<td class=\"yes\">✅ met</td>" if c.ok else "<td class=\"no\">❌ not met</td>"
        rows.append(f"<tr><td>{c.tier}</td>{mark}<td>{html.escape(c.item)}</td>"
                    f"<td>{html.escape(c.evidence)}</td><td>{_link(href, c.artifact)}</td></tr>")
    tiers = _tiers(checks)
    try:
        _, p = _patching(files)
        sentence = f"<p class=\"sentence\">{html.escape(patching_sentence(p))} ({html.escape(_where(p))}, seed design).</p>"
    except (ZhuntError, KeyError, IndexError, ValueError):
        sentence = "<p class=\"sentence\">Patching metrics not available.</p>"
    fig = files["figures"]
    items = [("Exp. A patching", "patching", files["verdict"]),
             ("Exp. A interchange (causal test)", "patching_interchange", files["subspaces"]),
             ("Exp. B R(k)", "decomposition", fig["decomposition_R"]),
             ("Exp. C ARD size of Z", "ard_size", fig["ard_z_size"]),
             ("Exp. C spectrum and overlap", "ard_spectrum", fig["ard_spectrum"]),
             ("Exp. D bridge", "bridge", fig["bridge_loo_r2"]),
             ("Phase 0 behaviour", "behaviour", fig["behaviour_accuracy"]),
             ("Phase 2 projection", "phase2", fig["phase2_heatmap"]),
             ("Digit confound", "digit_confound", files["digit_phase2"]),
             ("Structure: phases", "phases", fig["phases"])]
    meas = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(measured(key, files=files))}</td>"
                   f"<td>{_link(href, str(art))}</td></tr>" for name, key, art in items)
    folder = os.path.commonpath([str(files[k]) for k in MODEL_FILES if k in files])
    body = (f"<p>Seed 000 “done” checklist evaluated by <code>zhunt.report.summary.checklist</code> on the TSVs of "
            f"<code>{html.escape(folder)}/</code>. Minimum {tiers['minimum']}, strong {tiers['strong']}, "
            f"transformative {tiers['transformative']}.</p>\n{sentence}\n"
            "<h2>Checklist</h2>\n<table><tr><th>tier</th><th></th><th>item</th><th>evidence (measured)</th>"
            f"<th>artifact</th></tr>{''.join(rows)}</table>\n<h2>Headline results</h2>\n<table>{meas}</table>\n"
            f"<p class=\"muted\">Bottleneck layer predicted from weights: {head.get('bottleneck_layer', 'n/a')}; "
            f"thresholds: ≥ {MIN_PROBLEMS} problems, orthogonality error ≤ {ORTH_TOL} with LOO R² ≥ "
            f"{BRIDGE_R2_OK}; phases = a Z-dominated R(k) layer with non-Z-dominated layers before and after "
            f"it. Links open the report items.</p>")
    return _page(f"zhunt summary: {model}", body)


#: Columns of the cross-model table: (key, header, formatter).
_MODEL_COLUMNS = [
    ("model", "model", str), ("num_layers", "layers", str), ("d", "d", str),
    ("bottleneck_layer", "bottleneck layer", str), ("phases", "phases", str),
    ("patching_verdict", "Exp. A verdict (seed design)", str), ("donor_verdict", "donor design", str),
    ("patching_primary", "primary config", str), ("n_problems", "problems", str),
    ("interchange_verdict", "Exp. A interchange verdict", str), ("iia_z", "IIA of Z", _pct),
    ("iia_random_matched", "IIA of matched random", _pct), ("npe_z", "NPE of Z", _f),
    ("z_answer_change", "Z changes answer", _pct), ("zperp_answer_change", "Z⊥ changes answer", _pct),
    ("z_language_preservation", "Z keeps language", _pct),
    ("zperp_language_disruption", "Z⊥ disrupts language", _pct),
    ("random_answer_change", "random changes answer", _pct), ("max_R", "max R(k)", _f),
    ("max_R_layer", "at layer", str), ("ard_layer", "ARD layer", str), ("z_size", "size of Z (ARD)", str),
    ("svd_ard_overlap", "SVD–ARD overlap", _pct), ("bridge_r2_loo", "bridge LOO R²", _f),
    ("accuracy_en", "accuracy en", _pct), ("accuracy_zh", "accuracy zh", _pct),
    ("digit_phase2_frac_both", "Phase 2 signal beyond shared numerals", _pct),
    ("digit_nn_frac_both", "NN retrieval beyond shared numerals", _pct),
    ("layer_data_best", "data-best layer (Phase 2, all layers)", str),
    ("layer_distance_frac", "distance / depth", _f), ("layer_rho", "rho (eff. rank vs Phase 2)", _f),
    ("layer_p", "shift-permutation p", _f), ("layer_verdict", "weights predict the layer?", str),
]


def _reference_head() -> dict:
    """The seed's Qwen2.5-3B numbers as a quoted column of the cross-model page (zhunt.seeds)."""
    from zhunt.seeds import QWEN25_3B_LAYER as q

    dist = abs(q["data_best_layer"] - q["predicted_layer"])
    return {"model": q["model"], "num_layers": q["num_layers"], "d": q["d"],
            "bottleneck_layer": q["predicted_layer"], "phases": q["phases"], "layer_data_best": q["data_best_layer"],
            "layer_distance_frac": dist / (q["num_layers"] - 1), "layer_verdict": "n/a (2 layers measured)",
            "reference": True}


def models_page(heads: Sequence[Mapping], href: Callable[[str], str] | None = None,
                pages: Sequence | None = None) -> str:
    """The cross-model page (HTML): one column per model, one row per headline number; ``pages``
    are the models' summary pages (same order as ``heads``, the quoted reference column last and
    without one), linked in the last row."""
    rows = []
    for key, header, fmt in _MODEL_COLUMNS[1:]:
        cells = "".join(f"<td>{html.escape(fmt(h[key])) if h.get(key) is not None else 'n/a'}</td>" for h in heads)
        rows.append(f"<tr><th>{html.escape(header)}</th>{cells}</tr>")
    tiers = "".join(
        f"<tr><th>checklist {t}</th>"
        + "".join(f"<td>{html.escape(h.get('tiers', {}).get(t, 'n/a'))}</td>" for h in heads) + "</tr>"
        for t in ("minimum", "strong", "transformative"))
    pages = list(pages or [])
    links = "".join("<td>seed 000 / 001 (quoted)</td>" if h.get("reference")
                    else f"<td>{_link(href, str(pages[i]))}</td>" if i < len(pages) else "<td>n/a</td>"
                    for i, h in enumerate(heads))
    head = "".join(f"<th>{html.escape(h['model'])}</th>" for h in heads)
    body = (f"<p>Headline numbers of every analysed model, read from their TSVs (primary configuration of each "
            f"model; rates over problems).</p>\n<table><tr><th></th>{head}</tr>{''.join(rows)}{tiers}"
            f"<tr><th>summary page</th>{links}</tr></table>")
    return _page("zhunt: models side by side", body)


def write_model_summary(files: Mapping, model: str, out_html, out_json, out_tsv,
                        href: Callable[[str], str] | None = None) -> dict:
    """Write the per-model page, its headline JSON and the checklist TSV from the model's ``files``
    (:func:`model_files` keys); return the headline."""
    checks = checklist(files)
    head = headline(files, model)
    write_text(out_html, model_page(files, model, checks, head, href))
    write_json(out_json, head)
    write_table(pd.DataFrame([asdict(c) for c in checks]), out_tsv)
    return head


def write_models_summary(json_paths: Sequence, out_html, out_tsv, href: Callable[[str], str] | None = None,
                         pages: Sequence | None = None) -> None:
    """Write the cross-model page and table from the per-model headline JSONs (and their summary
    ``pages``, linked from the page)."""
    heads = []
    for p in json_paths:
        try:
            heads.append(json.loads(Path(p).read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ZhuntError(str(p), f"cannot read headline JSON ({exc.__class__.__name__})") from None
    heads.append(_reference_head())
    write_text(out_html, models_page(heads, href, pages))
    flat = [{k: (v if not isinstance(v, dict) else json.dumps(v, ensure_ascii=False)) for k, v in h.items()}
            for h in heads]
    write_table(pd.DataFrame(flat), out_tsv)
