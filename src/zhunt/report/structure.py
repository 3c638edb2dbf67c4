"""Figures of the weight-structure stage (:mod:`zhunt.weights.structure`): effective rank, layer
similarity, FFN alignment and the encode / compute / decode phases against depth.

Each ``plot_*`` takes the frames and arrays the science functions return and writes
``{stem}.pdf`` and ``{stem}.png`` (:func:`zhunt.report.figures.save_figure`).
"""

from __future__ import annotations

import numpy as np

from zhunt.weights.structure import FFN_NAMES, Phases

__all__ = ["int_xticks", "shade_phases", "plot_effective_rank", "plot_grassmann", "plot_ffn_alignment",
           "plot_phases"]


def int_xticks(ax) -> None:
    """Integer ticks only on the x-axis of ``ax`` (layer indices)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def shade_phases(ax, phases: Phases, label: bool = True) -> None:
    """Shade the encode / compute / decode spans of ``phases`` behind ``ax`` (legend entries if ``label``)."""
    from zhunt.report.figures import PHASE_COLORS

    start = 0
    labels = phases.labels + [None]
    for l in range(1, len(labels)):
        if labels[l] != labels[l - 1]:
            ph = labels[l - 1]
            ax.axvspan(start - 0.5, l - 0.5, color=PHASE_COLORS[ph], alpha=0.6, lw=0, zorder=0,
                       label=f"{ph} ({l - start})" if label else None)
            start = l


def plot_effective_rank(per_layer, model: str, stem, phases: Phases | None = None) -> list:
    """Attention-kernel effective rank vs depth (mean, head min-max band) over FFN ranks."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    x = per_layer["layer"].to_numpy()
    fig, (ax1, ax2) = new_figure(2, 1, width=6.0, height=5.0, sharex=True)
    if phases is not None:
        shade_phases(ax1, phases)
        shade_phases(ax2, phases, label=False)
    c = SERIES_COLORS["attention"]
    ax1.fill_between(x, per_layer["attn_min"], per_layer["attn_max"], color=c, alpha=0.2, lw=0,
                     label="head min-max")
    ax1.plot(x, per_layer["attn_mean"], "o-", color=c, label="attention kernel (head mean)")
    ax1.set_ylabel("effective rank")
    ax1.set_title(f"{model}: effective rank vs depth")
    ax1.legend(loc="best")
    for n in FFN_NAMES:
        ax2.plot(x, per_layer[n], "o-", color=SERIES_COLORS[n], label=n)
    ax2.set_ylabel("effective rank (FFN)")
    ax2.set_xlabel("decoder layer")
    ax2.legend(loc="best")
    int_xticks(ax2)
    return save_figure(fig, stem)


def plot_grassmann(S: np.ndarray, per_head: np.ndarray, model: str, k: int, stem) -> list:
    """Heatmaps of layer-pair Grassmann similarity: multi-head and per-head mean."""
    from zhunt.report.figures import new_figure, save_figure

    fig, axes = new_figure(1, 2, width=9.0, height=4.0)
    for ax, M, title in ((axes[0], S, "multi-head"), (axes[1], per_head.mean(axis=-1), "per head (mean)")):
        im = ax.imshow(M, vmin=0, vmax=1, origin="lower", interpolation="nearest")
        ax.set_title(f"{model}: {title}, k={k}")
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.grid(False)
        int_xticks(ax)
        fig.colorbar(im, ax=ax, shrink=0.8, label="Grassmann similarity")
    return save_figure(fig, stem)


def plot_ffn_alignment(ffn, model: str, k: int, stem, phases: Phases | None = None) -> list:
    """FFN-gate alignment with the attention subspace, as a ratio to chance (line at 1)."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    x = ffn["layer"].to_numpy()
    fig, ax = new_figure()
    if phases is not None:
        shade_phases(ax, phases)
    sd = ffn["std_across_heads"] / ffn["chance"]
    c = SERIES_COLORS["gate"]
    ax.fill_between(x, ffn["ratio_head_mean"] - sd, ffn["ratio_head_mean"] + sd, color=c, alpha=0.2, lw=0,
                    label="per-head subspaces, mean ± std")
    ax.plot(x, ffn["ratio"], "o-", color=c, label="multi-head subspace")
    ax.plot(x, ffn["ratio_raw_gate"], "^:", color=c, alpha=0.7, label="multi-head, raw gate (FFN norm not folded)")
    ax.axhline(1.0, color=SERIES_COLORS["chance"], ls="--", lw=1, label=f"chance (k/d = {ffn['chance'][0]:.4g})")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("FFN alignment / chance")
    ax.set_title(f"{model}: gate top-{k} directions in the attention subspace")
    ax.legend(loc="best")
    int_xticks(ax)
    return save_figure(fig, stem)


def plot_phases(adj: dict, per_layer, phases: Phases, bottleneck: dict, model: str, stem) -> list:
    """Adjacent Grassmann similarity and attention rank on one depth axis, phases shaded, bottleneck marked."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, ax = new_figure(width=7.0, height=3.8)
    shade_phases(ax, phases)
    sim = adj["sim"]
    gaps = np.arange(len(sim)) + 0.5
    ax.plot(gaps, sim, "o-", color=SERIES_COLORS["similarity"], label="Grassmann sim (l, l+1)")
    ax.set_xlabel("decoder layer (similarity plotted between layers)")
    ax.set_ylabel("adjacent Grassmann similarity")
    ax2 = ax.twinx()
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    ax2.plot(per_layer["layer"], per_layer["attn_mean"], "s-", color=SERIES_COLORS["attention"], ms=3,
             label="attention eff. rank (mean)")
    ax2.set_ylabel("attention eff. rank")
    b = bottleneck["predicted_layer"]
    ax.axvline(b, color=SERIES_COLORS["marker"], ls="--", lw=1.2, label=f"predicted bottleneck L{b}")
    ax2.plot([b], [per_layer["attn_mean"][b]], "*", color=SERIES_COLORS["marker"], ms=12, zorder=5)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="best", fontsize=7)
    ax.set_title(f"{model}: phases {phases.pattern}")
    ax.set_xlim(-0.5, len(per_layer) - 0.5)
    int_xticks(ax)
    return save_figure(fig, stem)
