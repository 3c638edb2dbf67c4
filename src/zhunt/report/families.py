"""Markdown and the figure of the weight-family stage (:mod:`zhunt.weights.families`, seed 002)."""

from __future__ import annotations

import numpy as np

from zhunt.weights.families import DELTA_ZERO, FAMILIES

__all__ = ["by_phase_markdown", "verdict_markdown", "plot_by_phase"]


def by_phase_markdown(by_phase, model_name: str, side: str, verdict: dict) -> str:
    """``families_by_phase.md``: caption and the phase x family table of mean delta."""
    caption = (f"Mean delta = aligned − raw cosine per phase (rows) and family (columns), {model_name}, "
               f"rotation on the {side} side. The verdict reads it against the null delta of each family "
               f"(families_verdict.tsv): {verdict['criteria']}.\n\n")
    return caption + by_phase.to_markdown(index=False, floatfmt="+.4f") + "\n"


def verdict_markdown(model_name: str, side: str, df, by_phase, verdict: dict, nulls, n_draws: int,
                     num_layers: int) -> str:
    """``families_verdict.md``: the per-family table against both nulls, the hypotheses and the verdict."""
    lines = [
        f"# Aligned vs raw weight-family cosine: {model_name}",
        "",
        f"{num_layers} decoder layers, {df[['L']].drop_duplicates().shape[0]} adjacent pairs; "
        f"rotation on the **{side}** side (scipy orthogonal_procrustes). delta = aligned cos − raw cos "
        "(≥ 0 by construction: R = I is a candidate), compared with the same quantity on two nulls: "
        f"independent Gaussian matrices of the family's shape ({n_draws} draws) and the same pair with the "
        "non-aligned index of the second layer shuffled (keeps both spectra, breaks the correspondence). "
        "The verdict uses the shuffled null (the Gaussian one ignores the spectra, which alone move the "
        "aligned cosine); excess = mean delta − shuffled delta.",
        "",
        f"Criteria: {verdict['criteria']}.",
        "",
        "| family | mean raw cos | mean aligned cos | mean delta | Gaussian-null delta | shuffled delta | "
        "excess | lifted | excess over Gaussian | delta(E) − delta(C) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in nulls.itertuples():
        emc = verdict["e_minus_c"].get(r.family)
        emc_s = f"{emc:+.4f}" if emc is not None else "n/a"
        lines.append(f"| {r.family} | {r.mean_raw_cos:+.4f} | {r.mean_aligned_cos:+.4f} | {r.mean_delta:+.4f} | "
                     f"{r.null_delta_gaussian:+.4f} | {r.null_delta_shuffled:+.4f} | {r.excess:+.4f} | "
                     f"{'yes' if r.lifted else 'no'} | {r.excess_gaussian:+.4f} | {emc_s} |")
    late = verdict["late_over_middle"]
    lines += [
        "",
        "## Hypotheses",
        "",
        f"- Training artifact (the rotation lifts delta beyond the null by more than {verdict['delta_zero']} in a "
        f"strict majority of families): **{'supported' if verdict['training_artifact'] else 'not supported'}** "
        f"({verdict['n_lifted']}/{verdict['n_families']} families lifted)",
        f"- Real specialisation (no family lifted beyond the null): "
        f"**{'supported' if verdict['real_specialization'] else 'not supported'}** "
        f"(max excess = {verdict['max_excess']:+.4f})",
        "- Seed's secondary prediction, late layers lifted more (delta(E) − delta(C) > "
        f"{verdict['e_over_c_margin']} in a strict majority of families): "
        + ("not testable (no pair in phase C or E)" if late is None else
           f"**{'yes' if late else 'no'}** ({verdict['n_e_over_c']}/{len(verdict['e_minus_c'])} families)"),
        "",
        f"**Verdict: {verdict['label']}**",
        "",
        "Why a null: two unrelated matrices already reach an aligned cosine of order sqrt(m / n) (n x m, "
        "aligned on m), so delta is never ≈ 0; only a delta above what unrelated matrices show says that "
        "a rotation was hiding shared structure.",
        "",
    ]
    return "\n".join(lines)


def plot_by_phase(by_phase, nulls, stem, model_name: str) -> list:
    """Bars of mean delta minus its (shuffled) null delta per phase and family, the lifted line at
    :data:`~zhunt.weights.families.DELTA_ZERO`."""
    from zhunt.report.figures import new_figure, save_figure

    fams = [f for f in FAMILIES if f in by_phase.columns]
    null = nulls.set_index("family")["null_delta"]
    phases = list(by_phase["phase"])
    fig, ax = new_figure(width=7.5, height=3.8)
    width = 0.8 / max(len(fams), 1)
    x = np.arange(len(phases))
    for i, fam in enumerate(fams):
        ax.bar(x + (i - (len(fams) - 1) / 2) * width, by_phase[fam].to_numpy(float) - float(null[fam]), width,
               label=fam)
    ax.axhline(DELTA_ZERO, color="k", lw=0.8, ls="--", label=f"excess = {DELTA_ZERO} (lifted above)")
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xticks(x, [f"{p}\n(n={n})" for p, n in zip(phases, by_phase["n_pairs"])])
    ax.set_ylabel("mean delta − null delta")
    ax.set_title(f"{model_name}: aligned − raw cosine of adjacent layers beyond its null, by phase",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, stem)
