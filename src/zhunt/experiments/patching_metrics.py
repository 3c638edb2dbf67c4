"""Exp. A, metrics: per (cell, subspace) rates with intervals, NPE, paired tests, Holm.

Input: a cell's records (:func:`zhunt.experiments.patching_cells.cell_records`), one row per
(pair, subspace) with

``first_differs``  the base's and the donor run's clean continuations diverge; their first
                   answer tokens are the first tokens where they differ, after a common
                   prefix of ``prefix_len`` tokens (:func:`zhunt.experiments.patching_cells.first_divergence`)
``iia_hit``        the patched argmax at that position == the donor run's first answer token
``value_differs``  the base's and the donor run's extracted answers differ (both found)
``value_hit``      the patched extracted answer == the donor run's
``true_hit``       the patched extracted answer == the donor's key answer
``npe``            ``(LD_patched - LD_clean) / (LD_donor-run - LD_clean)`` with
                   ``LD = log p(donor run's first token) - log p(base's first token)``
                   at the first answer position (NaN unless ``first_differs``)
``ld_seq``         the same LD with the teacher-forced log p of the whole continuations
``lang_effect``    ``[log m_tgt - log m_other]_patched - [...]_clean``, ``m`` = the
                   probability mass of target-script / other-script tokens at the
                   first answer position (NaN unless ``first_differs``)
``answer_lang``, ``base_answer_lang``  script of the answer span (``neutral`` = digits / none)
``dh_norm``        ``||Δh||_F`` of the patch over the patched positions

Rates (:func:`subspace_metrics`) are binomial with Wilson intervals
(:func:`zhunt.stats.binomial_ci`): ``iia`` over pairs with ``first_differs``,
``iia_value`` over pairs with ``value_differs``, ``true_rate`` over all pairs,
``lang_keep`` (answer-span script == the base run's own) over pairs whose
patched and base answers are both non-neutral (``n_neutral`` counts the rest).
``npe`` is the mean over pairs with ``first_differs`` with a percentile
bootstrap CI over pairs (:func:`zhunt.stats.bootstrap_ci`). Every subspace is
compared with ``random_matched`` on the same pairs: exact McNemar on
``iia_hit`` (``p_vs_random_matched``) and the two-sided Wilcoxon signed-rank
test on the per-pair NPE differences (``p_npe_vs_random_matched``,
:func:`scipy.stats.wilcoxon`). :func:`add_holm` adjusts both across the grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from zhunt.stats import binomial_ci, bootstrap_ci, holm, mcnemar_exact

__all__ = ["REFERENCE", "RATE_METHOD", "RECORD_COLUMNS", "PASSTHROUGH_COLUMNS", "rate", "npe", "wilcoxon_p",
           "subspace_metrics",
           "add_holm"]

#: The control every subspace is tested against.
REFERENCE = "random_matched"
#: Interval of every rate (``wilson`` or ``exact``).
RATE_METHOD = "wilson"
#: Columns a cell's records must hold.
RECORD_COLUMNS = ("pair", "subspace", "first_differs", "iia_hit", "value_differs", "value_hit", "true_hit",
                  "npe", "ld_seq", "lang_effect", "answer_lang", "base_answer_lang", "dh_norm")


def rate(flags, *, method: str = RATE_METHOD, seed: int = 0, n_resamples: int | None = None
         ) -> tuple[float, float, float, int]:
    """``(rate, lo, hi, n)``: the condition rate of both patching designs with its interval.

    ``method`` ``"wilson"`` / ``"exact"`` (the interchange design; ``flags``
    boolean, :func:`zhunt.stats.binomial_ci`) or ``"bootstrap"`` (the seed's
    grid: the mean of booleans or per-problem fractions with a percentile
    bootstrap CI, :func:`zhunt.stats.rate_ci` with ``seed`` and
    ``n_resamples``).
    """
    if method == "bootstrap":
        from zhunt.stats import rate_ci

        r = rate_ci(flags, seed=seed, **({} if n_resamples is None else {"n_resamples": n_resamples}))
        return r["rate"], r["lo"], r["hi"], r["n"]
    f = np.asarray(flags, dtype=bool)
    r, lo, hi = binomial_ci(int(f.sum()), int(f.size), method=method)
    return r, lo, hi, int(f.size)


def npe(ld_patched, ld_clean, ld_donor) -> np.ndarray:
    """Normalised patching effect per pair: ``(LD_patched - LD_clean) / (LD_donor-run - LD_clean)``.

    All arrays (n,); 1 = moved all the way to the donor run, 0 = no effect.
    NaN where the denominator is 0.
    """
    num = np.asarray(ld_patched, float) - np.asarray(ld_clean, float)
    den = np.asarray(ld_donor, float) - np.asarray(ld_clean, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / den, np.nan)


def wilcoxon_p(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p of paired ``a - b`` (1.0 when every difference is 0, NaN if n = 0)."""
    from scipy.stats import wilcoxon

    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def _lang_keep(g: pd.DataFrame) -> np.ndarray:
    ok = (g["answer_lang"] != "neutral") & (g["base_answer_lang"] != "neutral")
    return (g.loc[ok, "answer_lang"] == g.loc[ok, "base_answer_lang"]).to_numpy(bool)


#: Per-subspace constants of a cell's records carried into its metrics row (DAS overlaps, in degrees for angles).
PASSTHROUGH_COLUMNS = ("overlap_z", "overlap_ms", "angle_z_deg_median", "angle_ms_deg_median")


def _rates(g: pd.DataFrame, seed: int) -> dict:
    """IIA, value IIA, true-answer rate, NPE, LD, language effect and language keep of one subspace's rows."""
    fd = g["first_differs"].astype(bool)
    vd = g["value_differs"].astype(bool)
    row = {"n": len(g)}
    r = rate(g.loc[fd, "iia_hit"].astype(bool))
    row.update(n_iia=r[3], iia=r[0], iia_lo=r[1], iia_hi=r[2])
    r = rate(g.loc[vd, "value_hit"].astype(bool))
    row.update(n_value=r[3], iia_value=r[0], iia_value_lo=r[1], iia_value_hi=r[2])
    r = rate(g["true_hit"].astype(bool))
    row.update(true_rate=r[0], true_rate_lo=r[1], true_rate_hi=r[2])
    e = g.loc[fd, "npe"].to_numpy(float)
    e = e[np.isfinite(e)]
    row["npe"], row["npe_lo"], row["npe_hi"] = bootstrap_ci(e, seed=seed)
    row["ld_seq"] = float(np.nanmean(g["ld_seq"])) if g["ld_seq"].notna().any() else float("nan")
    row["lang_effect"] = float(np.nanmean(g["lang_effect"])) if g["lang_effect"].notna().any() else float("nan")
    r = rate(_lang_keep(g))
    row.update(n_lang=r[3], n_neutral=len(g) - r[3], lang_keep=r[0], lang_keep_lo=r[1], lang_keep_hi=r[2])
    row["dh_norm"] = float(g["dh_norm"].mean())
    for c in PASSTHROUGH_COLUMNS:
        if c in g.columns and g[c].notna().any():
            row[c] = float(g[c].mean())
    return row


def _paired(g: pd.DataFrame, z: pd.DataFrame | None, ref: pd.DataFrame | None, is_ref: bool) -> dict:
    """``energy_ratio`` (``||Δh||`` over Z's, same pairs) and the paired tests against :data:`REFERENCE`."""
    row = {}
    if z is not None:
        common = g.index.intersection(z.index)
        zn = z.loc[common, "dh_norm"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            row["energy_ratio"] = float(np.nanmean(g.loc[common, "dh_norm"].to_numpy(float) / zn))
    if ref is not None and not is_ref:
        common = g.index.intersection(ref.index)
        a, b = g.loc[common], ref.loc[common]
        m = a["first_differs"].astype(bool).to_numpy()
        row["p_vs_random_matched"] = mcnemar_exact(a["iia_hit"].to_numpy(bool)[m],
                                                   b["iia_hit"].to_numpy(bool)[m])["p"] if m.any() else np.nan
        row["p_npe_vs_random_matched"] = wilcoxon_p(a["npe"].to_numpy(float)[m], b["npe"].to_numpy(float)[m])
    else:
        row["p_vs_random_matched"] = row["p_npe_vs_random_matched"] = float("nan")
    return row


def subspace_metrics(records: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """One row per subspace (and ``lam`` of the ``ms_ablation`` rows) of one cell (module docstring).

    Parameters
    ----------
    records : pandas.DataFrame
        One cell's records (:data:`RECORD_COLUMNS`; ``lam`` optional, NaN but
        on ``ms_ablation`` rows).
    seed : int
        Seed of the NPE bootstrap.

    Returns
    -------
    pandas.DataFrame
        ``subspace, [lam,] n, n_iia, iia, iia_lo, iia_hi, n_value, iia_value,
        iia_value_lo, iia_value_hi, true_rate, true_rate_lo, true_rate_hi, npe,
        npe_lo, npe_hi, ld_seq, lang_effect, n_lang, n_neutral, lang_keep,
        lang_keep_lo, lang_keep_hi, dh_norm, [PASSTHROUGH_COLUMNS,]
        energy_ratio, p_vs_random_matched, p_npe_vs_random_matched`` in
        :data:`SUBSPACES` order (``lam`` ascending within ``ms_ablation``).
    """
    from zhunt.experiments.patching_design import SUBSPACES

    missing = set(RECORD_COLUMNS) - set(records.columns)
    if missing:
        raise ValueError(f"records lack columns {sorted(missing)}")
    has_lam = "lam" in records.columns
    lam = records["lam"].fillna(-1.0) if has_lam else pd.Series(-1.0, index=records.index)
    by = {key: g.set_index("pair").sort_index() for key, g in records.groupby([records["subspace"], lam])}
    ref, z = by.get((REFERENCE, -1.0)), by.get(("z", -1.0))
    order = {s: i for i, s in enumerate(SUBSPACES)}
    rows = []
    for name, lm in sorted((k for k in by if k[0] in order), key=lambda k: (order[k[0]], k[1])):
        g = by[(name, lm)]
        row = {"subspace": name, **({"lam": lm if lm >= 0 else np.nan} if has_lam else {}), **_rates(g, seed)}
        rows.append({**row, **_paired(g, z, ref, name == REFERENCE)})
    return pd.DataFrame(rows)


def add_holm(table: pd.DataFrame, columns: Sequence[str] = ("p_vs_random_matched", "p_npe_vs_random_matched")
             ) -> pd.DataFrame:
    """Holm-adjust each p column across every row of the grid: ``p_holm`` (IIA) and ``p_npe_holm``."""
    out = table.copy()
    names = {"p_vs_random_matched": "p_holm", "p_npe_vs_random_matched": "p_npe_holm"}
    for c in columns:
        out[names.get(c, f"{c}_holm")] = holm(out[c].to_numpy(float))
    return out
