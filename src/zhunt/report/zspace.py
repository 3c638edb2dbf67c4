"""Phase 2 and data-driven-subspace Markdown and figures (tables from :mod:`zhunt.activations.zspace`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from zhunt.activations.zspace import safe_ratio
from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

__all__ = ["phase2_headlines", "phase2_summary_markdown", "plot_phase2_heatmaps", "plot_datadriven"]


def phase2_headlines(summary: pd.DataFrame, model: str, langs) -> list[str]:
    """The Phase 2 summary's heading, one line per (site, token set, pooling) and the seed's numbers
    (:func:`zhunt.activations.zspace.phase2_summary` of the table)."""
    out = [f"# Phase 2 Z-projection: {model} ({langs[0]}/{langs[1]})", ""]

    def vanish(v) -> str:
        return f"k={int(v)}" if np.isfinite(v) else "never within the sweep"

    top = summary[summary["layer"] == "all"]
    for (site, tokens, pooling), sp in top.groupby(["site", "tokens", "pooling"], sort=False):
        r = sp[sp["kind"] == "all"].iloc[0]
        per_kind = "; ".join(f"{x['kind']} {vanish(x['vanish_k'])} (specificity: {vanish(x['vanish_k_spec'])})"
                             for _, x in sp[sp["kind"] != "all"].iterrows())
        out.append(
            f"- site {site}, {tokens} tokens, {pooling} pooling: ratio_Z < ratio_Z⊥ in "
            f"{r['n_Z_better']}/{r['n_configs']} configs "
            f"(ratio_Z below the random 95% interval in {r['n_Z_better_than_random']}); best L{r['best_layer']} "
            f"{r['best_kind']} k={r['best_k']}: ratio_Z {r['best_ratio_Z']:.3f} vs ratio_Z⊥ "
            f"{r['best_ratio_Zperp']:.3f} (percentile among random {r['best_ratio_Z_percentile']:.1f}); "
            f"language energy in Z below the random interval in {r['n_lang_energy_below']}/{r['n_configs']} "
            f"(problem energy too in {r['n_prob_energy_below']}; language-specific, E_lang/E_prob below random, "
            f"in {r['n_lang_specific']}); effect vanishes (E_lang(Z) inside the random interval at every layer) "
            f"from: {per_kind}.")
    out += ["", "Seed 000 (Qwen2.5-3B, L32/L33, k=20/50/78): mean pooling 12/12 with ratio_Z < ratio_Zp, "
                "language energy in Z 80-86% of k/d at k=20-50, gone at k=78, last-token pooling reversed, "
                "best L32 multi-head k=50 (0.730 vs 0.824).", ""]
    return out


def phase2_summary_markdown(summary: pd.DataFrame, model: str, langs) -> str:
    """The Markdown of ``zspace/phase2_summary``: :func:`phase2_headlines` above the summary table."""
    return ("\n".join(phase2_headlines(summary, model, langs)) + "\n"
            + summary.to_markdown(index=False, floatfmt=".4g") + "\n")


def plot_phase2_heatmaps(table: pd.DataFrame, model: str, stem) -> list:
    """Heatmaps over (layer, k) of ``ratio_Z / ratio_Zperp``, one panel per mask kind x pooling.

    Colour is centred at 1 (blue: Z separates better than Z⊥); ``*`` marks
    configs whose ``ratio_Z`` lies below the random 95 % interval.
    """
    from matplotlib.colors import TwoSlopeNorm

    kinds = list(dict.fromkeys(table["kind"]))
    pools = list(dict.fromkeys(table["pooling"]))
    layers = sorted(table["layer"].unique())
    ks = sorted(table["k"].unique())
    rel = table["ratio_Z"] / table["ratio_Zperp"]
    span = float(np.nanmax(np.abs(np.log(rel[np.isfinite(rel) & (rel > 0)])))) if np.isfinite(rel).any() else 0.1
    span = min(max(span, 0.05), math.log(3.0))  # colours saturate beyond a factor 3 either way
    norm = TwoSlopeNorm(vcenter=1.0, vmin=math.exp(-span), vmax=math.exp(span))
    fig, axes = new_figure(len(kinds), len(pools), width=3.2 * len(pools) + 1.0,
                           height=0.45 * len(layers) * len(kinds) + 1.6 * len(kinds), squeeze=False,
                           layout="constrained")
    im = None
    for a, kind in enumerate(kinds):
        for b, pooling in enumerate(pools):
            ax = axes[a, b]
            M = np.full((len(layers), len(ks)), np.nan)
            star = np.zeros_like(M, dtype=bool)
            sel = table[(table["kind"] == kind) & (table["pooling"] == pooling)]
            for _, r in sel.iterrows():
                i, jj = layers.index(r["layer"]), ks.index(r["k"])
                M[i, jj] = safe_ratio(r["ratio_Z"], r["ratio_Zperp"])
                star[i, jj] = r["ratio_Z"] < r["ratio_rand_lo"]
            im = ax.imshow(M, cmap="RdBu_r", norm=norm, origin="lower", aspect="auto", interpolation="nearest")
            for i in range(len(layers)):
                for jj in range(len(ks)):
                    if np.isfinite(M[i, jj]):
                        dark = abs(math.log(max(M[i, jj], 1e-300))) > 0.6 * span
                        ax.text(jj, i, f"{M[i, jj]:.2f}{'*' if star[i, jj] else ''}", ha="center",
                                va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(ks)), [str(k) for k in ks])
            ax.set_yticks(range(len(layers)), [f"L{l}" for l in layers])
            ax.set_xlabel("k")
            ax.set_title(f"{kind}, {pooling} pooling")
            ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, extend="both", label="ratio_Z / ratio_Z⊥  (<1: Z separates better)")
    fig.suptitle(f"{model}: Phase 2 ratio_Z / ratio_Z⊥  (* ratio_Z below random 95% interval)", fontsize=9)
    return save_figure(fig, stem)


def plot_datadriven(table: pd.DataFrame, model: str, stem) -> list:
    """Per layer: mean cosine of the principal angles between Z (k) and M_s vs k, with the random band."""
    layers = sorted(table["layer"].unique())
    fig, axes = new_figure(1, len(layers), width=3.4 * len(layers) + 0.6, height=3.2, squeeze=False, sharey=True,
                           layout="constrained")
    styles = {"last": "-", "mean": "--"}
    marks = {"multihead": "o", "head0": "s"}
    colors = [SERIES_COLORS["attention"], SERIES_COLORS["gate"], SERIES_COLORS["up"], SERIES_COLORS["down"]]
    for ax, l in zip(axes[0], layers):
        t = table[table["layer"] == l]
        for n, ((kind, pooling), g) in enumerate(t.groupby(["kind", "pooling"], sort=False)):
            g = g.sort_values("k")
            c = colors[n % len(colors)]
            ax.plot(g["k"], g["cos_mean"], marker=marks.get(kind, "o"), ls=styles.get(pooling, "-"), color=c,
                    label=f"Z {kind} vs M_s ({pooling})")
        g = t.drop_duplicates("k").sort_values("k")
        ax.fill_between(g["k"], g["cos_mean_rand_lo"], g["cos_mean_rand_hi"], color=SERIES_COLORS["chance"],
                        alpha=0.2, lw=0, label="random k-dim subspace, 95%")
        ax.plot(g["k"], g["cos_mean_rand_mean"], ":", color=SERIES_COLORS["chance"], label="random, mean")
        ax.set_title(f"L{l} (r={int(t['r'].iloc[0])})")
        ax.set_xlabel("k (dimension of Z)")
    axes[0, 0].set_ylabel("mean cos(principal angles)")
    axes[0, -1].legend(loc="best", fontsize=6)
    fig.suptitle(f"{model}: weight-derived Z vs data-driven language subspace M_s", fontsize=9)
    return save_figure(fig, stem)
