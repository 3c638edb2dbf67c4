"""Exp. B rendering: the R(l) figure and the Markdown report of :func:`zhunt.activations.decomposition.decompose`."""

from __future__ import annotations

import pandas as pd

from zhunt.activations.decomposition import ALPHA, Z_DOMINATED_ENRICHMENT
from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

__all__ = ["plot_decomposition", "decomposition_markdown"]


def plot_decomposition(df: pd.DataFrame, stem, title: str = "") -> None:
    """R vs layer (languages as lines, random 95% band of the pooled R, isotropic line) and R_zh - R_en
    (random band, layers significant in the permutation test circled)."""
    ks = sorted(df["k"].unique())
    has_diff = (df["lang"] == "zh-en").any()
    nrows = 2 if has_diff else 1
    fig, axes = new_figure(nrows, len(ks), width=4.2 * len(ks), height=3.0 * nrows, squeeze=False, sharex=True)
    palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
    for c, k in enumerate(ks):
        sub = df[df["k"] == k]
        ax = axes[0, c]
        pooled = sub[sub["lang"] == "all"]
        ax.fill_between(pooled["layer"], pooled["rand_q025"], pooled["rand_q975"], color="0.85",
                        label="random 95% (all)")
        ax.axhline(float(pooled["iso_expected"].iloc[0]), color=SERIES_COLORS["chance"], ls=":", lw=1,
                   label=r"isotropic $\sqrt{k/(d-k)}$")
        langs = [g for g in dict.fromkeys(sub["lang"]) if g not in ("all", "zh-en")] + ["all"]
        for i, g in enumerate(langs):
            s = sub[sub["lang"] == g]
            ax.plot(s["layer"], s["R"], marker="o", color="black" if g == "all" else palette[i % len(palette)],
                    ls="--" if g == "all" else "-", label=g)
        zd = pooled[pooled["label"] == "Z-dominated"]
        ax.scatter(zd["layer"], zd["R"], s=60, facecolors="none", edgecolors=SERIES_COLORS["marker"],
                   label="Z-dominated (all)", zorder=5)
        ax.set_yscale("log")
        if c == 0:
            ax.set_ylabel(r"$R = \|P_Z \Delta\bar h\| / \|P_{Z^\perp} \Delta\bar h\|$")
        ax.set_title(f"k = {k}")
        if c == 0:
            ax.legend(loc="best")
        if has_diff:
            ax2 = axes[1, c]
            s = sub[sub["lang"] == "zh-en"]
            ax2.fill_between(s["layer"], s["rand_q025"], s["rand_q975"], color="0.85", label="random 95%")
            ax2.axhline(0, color=SERIES_COLORS["chance"], lw=0.8)
            ax2.plot(s["layer"], s["R"], marker="o", color=SERIES_COLORS["attention"], label=r"$R_{zh} - R_{en}$")
            sig = s[s["label"] != "no difference"]
            ax2.scatter(sig["layer"], sig["R"], s=60, facecolors="none", edgecolors=SERIES_COLORS["marker"],
                        label=f"Holm p < {ALPHA:g} (permutation)", zorder=5)
            if c == 0:
                ax2.set_ylabel(r"$R_{zh} - R_{en}$")
            ax2.set_xlabel("decoder layer l (update l -> l+1)")
            if c == 0:
                ax2.legend(loc="best")
        else:
            ax.set_xlabel("decoder layer l (update l -> l+1)")
    if title:
        fig.suptitle(title)
    save_figure(fig, stem)


def decomposition_markdown(df: pd.DataFrame, model_name: str, mask_layer, n_random: int) -> str:
    """The Exp. B report: the method in one paragraph, then per k the pooled labels and every row."""
    lines = [f"# Experiment B: update decomposition R(l), {model_name}", "",
             f"Basis: Z of decoder layer {mask_layer} (fixed for every layer). R = mean over prompts of "
             "||P_Z Δh̄|| / ||P_Z⊥ Δh̄|| (mean-pooled update of decoder layer l, special tokens excluded); "
             f"R_of_means = ratio of the prompt-averaged norms. Random: {n_random} Haar subspaces of the same k "
             f"on the same updates. Z-dominated: R above the random 97.5% quantile and >= "
             f"{Z_DOMINATED_ENRICHMENT}x the random mean; Z⊥-dominated: below the 2.5% quantile. "
             "Rows: each language, `all` = the pooled languages named in `pooled` (zh + en, as the seed), "
             "and zh-en: R = mean over problems of r_zh − r_en, tested by swapping the two languages' labels "
             f"within each problem (permutation p, Holm across layers; zh/en higher when p_holm < {ALPHA}); "
             "the random band of the same difference is shown for context.", ""]
    for k in sorted(df["k"].unique()):
        sub = df[(df["k"] == k) & (df["lang"] == "all")]
        zd = sub[sub["label"] == "Z-dominated"]["layer"].tolist()
        zp = sub[sub["label"] == "Z⊥-dominated"]["layer"].tolist()
        top = sub.loc[sub["R"].idxmax()]
        lines += [f"## k = {k}", "",
                  f"Pooled: Z-dominated layers {zd or 'none'}; Z⊥-dominated layers {zp or 'none'}; "
                  f"max R = {top['R']:.3g} at layer {int(top['layer'])} ({top['enrichment']:.2f}x random); "
                  f"layers with R > 1: {int(sub['R_gt_1'].sum())}/{len(sub)}.", "",
                  "| layer | lang | R | R_of_means | random mean [2.5%, 97.5%] | enrichment | p perm / Holm | "
                  "label |",
                  "|---|---|---|---|---|---|---|---|"]
        for _, r in df[df["k"] == k].iterrows():
            enr = "" if pd.isna(r.get("enrichment")) else f"{r['enrichment']:.2f}"
            rom = "" if pd.isna(r.get("R_of_means")) else f"{r['R_of_means']:.3g}"
            pp = "" if pd.isna(r.get("p_perm")) else f"{r['p_perm']:.3g} / {r['p_holm']:.3g}"
            lines.append(f"| {r['layer']} | {r['lang']} | {r['R']:.3g} | {rom} | {r['rand_mean']:.3g} "
                         f"[{r['rand_q025']:.3g}, {r['rand_q975']:.3g}] | {enr} | {pp} | {r['label']} |")
        lines.append("")
    return "\n".join(lines)
