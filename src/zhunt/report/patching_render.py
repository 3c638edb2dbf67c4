"""Exp. A, rendering: the cells' records into ``subspaces.tsv``, the verdict and the IIA/NPE figure.

:func:`subspaces_table` computes :func:`zhunt.experiments.patching_metrics.subspace_metrics` per cell,
Holm-adjusts the p-values across the grid (:func:`zhunt.experiments.patching_metrics.add_holm`) and marks
the pre-registered primary cell; :func:`judge_interchange` judges it
(:func:`zhunt.experiments.patching_verdict.interchange_verdict`) and checks the positive control;
:func:`subspaces_markdown`, :func:`verdict_markdown` and :func:`plot_interchange` render them. The
stage :func:`zhunt.stages.patching.run_patching_interchange` reads the cells and writes the outputs.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from zhunt.experiments.patching_design import SUBSPACES, parse_cell
from zhunt.experiments.patching_metrics import add_holm, subspace_metrics
from zhunt.experiments.patching_verdict import interchange_verdict, positive_control, verdict_caption

__all__ = ["TABLE_COLUMNS", "subspaces_table", "judge_interchange", "subspaces_markdown", "verdict_markdown",
           "plot_interchange"]

#: Leading columns of ``subspaces.tsv`` (then the remaining metric columns).
TABLE_COLUMNS = ("site", "hidden_index", "layer", "k", "alignment", "direction", "source", "subspace", "lam", "primary",
                 "n", "iia", "iia_lo", "iia_hi", "iia_value", "iia_value_lo", "iia_value_hi", "npe", "npe_lo",
                 "npe_hi", "lang_keep", "lang_keep_lo", "lang_keep_hi", "p_vs_random_matched", "p_holm")


def subspaces_table(cells: Mapping[str, pd.DataFrame], primary: str, *, seed: int = 0,
                    primary_lam: float = np.nan) -> pd.DataFrame:
    """One row per (cell, subspace, lam) from the cells' records (``cell name -> records``).

    ``primary`` marks the primary cell's rows; of its ``ms_ablation`` rows only the one at
    ``primary_lam`` (the other strengths are exploratory). ``lam`` is NaN but on ``ms_ablation`` rows.
    Holm runs across every row with a p-value (every ``lam`` included).
    """
    parts = []
    for name, rec in cells.items():
        cell = parse_cell(name)
        m = subspace_metrics(rec, seed=seed)
        if "lam" not in m.columns:
            m.insert(1, "lam", np.nan)
        for col, val in reversed(list(cell.key().items())):
            m.insert(0, col, val)
        m.insert(len(cell.key()) + 2, "primary", (cell.name == primary) & (m["lam"].isna() | (m["lam"] == primary_lam)))
        parts.append(m)
    t = add_holm(pd.concat(parts, ignore_index=True))
    order = {s: i for i, s in enumerate(SUBSPACES)}
    t = t.sort_values(["site", "alignment", "direction", "layer", "k"], kind="stable")
    t = t.assign(_o=t["subspace"].map(order)).sort_values(
        ["site", "alignment", "direction", "layer", "k", "_o"], kind="stable").drop(columns="_o")
    rest = [c for c in t.columns if c not in TABLE_COLUMNS]
    return t[list(TABLE_COLUMNS) + rest].reset_index(drop=True)


def _ci(r, name: str, fmt: str = "{:.2f}") -> str:
    v = r[name]
    if v is None or not np.isfinite(v):
        return "—"
    return f"{fmt.format(v)} [{fmt.format(r[name + '_lo'])}, {fmt.format(r[name + '_hi'])}]"


def _rows_markdown(t: pd.DataFrame) -> list[str]:
    lines = ["| subspace | n | IIA (n) | IIA value (n) | NPE | lang. kept (n) | ‖Δh‖ / Z's | p vs matched "
             "| Holm p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        p = "—" if not np.isfinite(r["p_vs_random_matched"]) else f"{r['p_vs_random_matched']:.3g}"
        ph = "—" if not np.isfinite(r["p_holm"]) else f"{r['p_holm']:.3g}"
        name = r["subspace"] if not np.isfinite(r.get("lam", np.nan)) else f"{r['subspace']} (λ = {r['lam']:g})"
        lines.append(f"| {name} | {r['n']} | {_ci(r, 'iia')} ({r['n_iia']}) | {_ci(r, 'iia_value')} "
                     f"({r['n_value']}) | {_ci(r, 'npe')} | {_ci(r, 'lang_keep')} ({r['n_lang']}) | "
                     f"{r.get('energy_ratio', float('nan')):.2f} | {p} | {ph} |")
    return lines


def plot_interchange(t: pd.DataFrame, out_stem, title: str) -> None:
    """IIA and NPE (with intervals) per subspace vs layer: rows = metric, columns = alignment.

    Drawn at the primary cell's site, k and direction (the aligned column at its
    target language). Writes ``{out_stem}.pdf`` and ``.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhunt.io import atomic_path

    p = t[t["primary"]].iloc[0]
    lam_p = set(t.loc[t["primary"] & (t["subspace"] == "ms_ablation"), "lam"])  # ms_ablation: the primary lam only
    sel = t[(t["lam"].isna() | t["lam"].isin(lam_p)) & (t["site"] == p["site"]) & (t["k"] == p["k"])
            & (t["direction"].str.split("<-").str[0] == p["direction"].split("<-")[0])]
    aligns = [a for a in ("mean", "ot", "aligned") if a in set(sel["alignment"])]
    fig, axes = plt.subplots(2, len(aligns), figsize=(4.2 * len(aligns), 6.4), squeeze=False, sharey="row")
    subs = [s for s in SUBSPACES if s in set(sel["subspace"])]
    for c, a in enumerate(aligns):
        ta = sel[(sel["alignment"] == a) & ((sel["direction"] == p["direction"]) | (a == "aligned"))]
        for i, s in enumerate(subs):
            ts = ta[ta["subspace"] == s].sort_values("layer")
            x = ts["layer"].to_numpy(float) + (i - len(subs) / 2) * 0.05
            for row, m in enumerate(("iia", "npe")):
                y = ts[m].to_numpy(float)
                err = np.vstack([y - ts[f"{m}_lo"].to_numpy(float), ts[f"{m}_hi"].to_numpy(float) - y])
                axes[row, c].errorbar(x, y, yerr=np.clip(np.nan_to_num(err), 0, None), marker="o", ms=3,
                                      capsize=2, label=s)
        axes[0, c].set_title(f"{a} ({ta['direction'].iloc[0] if len(ta) else ''})")
        axes[1, c].set_xlabel("layer")
    axes[0, 0].set_ylabel("IIA (Wilson 95%)")
    axes[1, 0].set_ylabel("NPE (bootstrap 95%)")
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: site {p['site']}, k = {p['k']}")
    fig.tight_layout()
    for ext in ("pdf", "png"):
        with atomic_path(f"{out_stem}.{ext}", suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=150)
    plt.close(fig)


def judge_interchange(t: pd.DataFrame, primary: str, primary_lam: float = np.nan) -> dict:
    """The primary cell's verdict and the positive control of a :func:`subspaces_table`.

    Returns
    -------
    dict
        ``verdict``, ``criteria`` (:func:`zhunt.experiments.patching_verdict.interchange_verdict`),
        ``positive_control`` (:func:`~zhunt.experiments.patching_verdict.positive_control`).
    """
    from zhunt.errors import ZhuntError

    if not t["primary"].any():
        raise ZhuntError("study.patching.primary", f"primary cell {primary} is not among the cells")
    ms = t[t["subspace"] == "ms_ablation"]
    if len(ms) and not (ms["lam"] == primary_lam).any():
        raise ZhuntError("study.patching.ms_ablation.primary_lam", f"{primary_lam} is not one of the ablation "
                                                                   f"strengths lam {sorted(set(ms['lam']))}")
    prim = t[t["primary"]].set_index("subspace")
    pc = positive_control(t)
    ceiling = pc["layers"].get((prim.loc["z", "site"], int(prim.loc["z", "layer"])), np.nan)
    verdict, crit = interchange_verdict(prim.loc["z"].to_dict(), prim.loc["random_matched"].to_dict(), ceiling)
    return {"verdict": verdict, "criteria": crit, "positive_control": pc}


def subspaces_markdown(t: pd.DataFrame, primary: str, model_name: str) -> str:
    """``subspaces.md``: one table per (site, alignment, direction, layer, k)."""
    md = [f"# Exp. A interchange: {model_name}", "", f"Primary cell (pre-registered): `{primary}`.", ""]
    for key, g in t.groupby(["site", "alignment", "direction", "layer", "k"], sort=False):
        tag = " (primary)" if g["primary"].any() else " (exploratory)"
        md += [f"## site {key[0]}, {key[1]}, {key[2]}, L{key[3]}, k = {key[4]}{tag}", "", *_rows_markdown(g), ""]
    return "\n".join(md)


def verdict_markdown(t: pd.DataFrame, primary: str, model_name: str, judged: Mapping) -> str:
    """``interchange_verdict.md``: the primary cell's verdict, its table, the positive control and the rule."""
    verdict, crit, pc = judged["verdict"], judged["criteria"], judged["positive_control"]
    prim = t[t["primary"]].set_index("subspace")
    pcl = ", ".join(f"{s} L{l}: {v:.2f}" for (s, l), v in sorted(pc["layers"].items()))
    pc_word = "holds" if pc["holds"] else "FAILS" if pc["testable"] else \
        "not testable (no aligned pair whose clean runs diverge)"
    gain = lambda x: "n/a" if not np.isfinite(x) else f"{x:+.2f}"  # noqa: E731
    lines = [f"# Exp. A verdict (interchange design): {model_name}", "",
             f"**Primary cell `{primary}`: {verdict}** — IIA gain over the energy-matched random subspace "
             f"{gain(crit['iia_gain'])} (Holm p = {crit['p_iia']:.3g}), NPE gain {gain(crit['npe_gain'])} "
             f"(Holm p = {crit['p_npe']:.3g}); {int(prim.loc['z', 'n_iia'])} pairs whose clean runs diverge "
             f"(IIA at their first diverging token).",
             "",
             *_rows_markdown(prim.reset_index()), "",
             f"Positive control (template-aligned full interchange, IIA at every layer): {pc_word} "
             f"({pcl or 'no aligned cells'}).", "",
             f"{int((~t['primary']).sum())} exploratory rows in subspaces.tsv (p-values Holm-adjusted across "
             f"the grid).", "", verdict_caption(), ""]
    return "\n".join(lines)
