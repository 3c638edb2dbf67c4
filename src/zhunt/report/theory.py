"""Seed-003 rendering: the SNR, NN-accuracy, contribution-Gram, cross-map and GARCH figures and the
GARCH Markdown (numbers from :mod:`zhunt.activations.theory` and its parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from zhunt.activations.garch import GARCH_RULE
from zhunt.activations.paired import reference_language

__all__ = ["garch_markdown", "plot_snr", "plot_nn_accuracy", "plot_contrib_gram", "plot_crossmap", "plot_garch"]


def garch_markdown(out: pd.DataFrame, model: dict, model_out, min_steps: int, level: float) -> str:
    """The GARCH table, the rule and the model verdict of each series (:func:`garch_model_verdict`)."""
    lines = [out.to_markdown(index=False, floatfmt=".4g"), "", f"Rule: {GARCH_RULE}.", ""]
    for name, m in (("update difference ||delta_l||^2 (primary)", model), ("output difference", model_out)):
        if m is not None and m["n_fitted"] == 0:
            lines.append(f"- {name}: no series of >= {min_steps} steps to fit: **not measured**")
        elif m is not None:
            lines.append(f"- {name}: {m['n_clustered']}/{m['n_fitted']} series clustered "
                         f"(rate {m['rate']:.3g}, Wilson 95% [{m['lo']:.3g}, {m['hi']:.3g}], binomial p vs "
                         f"{level:g} = {m['binom_p']:.3g}): **{m['verdict']}**")
    return "\n".join(lines) + "\n"


def _int_xticks(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_snr(snr: pd.DataFrame, pair: tuple[str, str], model_name: str, stem) -> list[Path]:
    """SNR vs depth for every pair (the main pair bold, Theorem-2 condition marked) and ``delta_ratio`` vs SNR."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, (a, b) = new_figure(1, 2, width=9.0, height=3.4)
    main = f"{pair[0]}-{pair[1]}"
    for key, g in snr.groupby("pair", sort=False):
        if key != main:
            a.plot(g["j"], g["SNR"], color="0.7", lw=0.8)
    g = snr[snr["pair"] == main]
    a.plot(g["j"], g["SNR"], color=SERIES_COLORS["attention"], lw=2, label=f"{main}")
    cond = g["condition_holds"].astype("boolean")
    yes, no = g[cond.fillna(False).to_numpy()], g[(~cond).fillna(False).to_numpy()]
    a.plot(yes["j"], yes["SNR"], "o", color=SERIES_COLORS["up"], label="condition holds")
    a.plot(no["j"], no["SNR"], "x", color=SERIES_COLORS["marker"], ms=7, label="condition fails")
    a.set_xlabel("hidden index j (j = l+1: after layer l)")
    a.set_ylabel(r"SNR = $D_{same}/D_{diff}$")
    a.set_title(f"{model_name}: SNR through depth (grey: other pairs)")
    a.legend()
    b.plot(g["j"], g["SNR"], color=SERIES_COLORS["attention"], label="SNR(j)")
    b.plot(g["j"], g["delta_ratio"], color=SERIES_COLORS["gate"], label=r"$E\|\delta_j\|^2/\sigma_j^2$")
    b.set_yscale("log")
    b.set_xlabel("j (update of layer j)")
    b.set_title(f"Theorem 2 ({main}): condition = orange below blue")
    b.legend()
    _int_xticks(a, b)
    return save_figure(fig, stem)


def plot_nn_accuracy(nn: pd.DataFrame, langs, threshold: float, model_name: str, stem) -> list[Path]:
    """Retrieval accuracy vs depth, one panel per space; pairs into the reference language coloured."""
    from zhunt.report.figures import new_figure, save_figure

    fig, axes = new_figure(1, 2, width=9.0, height=3.4, sharey=True)
    colors = dict(zip(langs, ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]))
    for ax, space in zip(axes, ("h", "update")):
        s = nn[nn["space"] == space]
        main = {(l, reference_language(l, langs)) for l in langs}
        for (a, b), g in s.groupby(["src_lang", "tgt_lang"], sort=False):
            if (a, b) not in main:
                ax.plot(g["j"], g["accuracy"], color="0.8", lw=0.6)
        for l in langs:
            ref = reference_language(l, langs)
            g = s[(s["src_lang"] == l) & (s["tgt_lang"] == ref)]
            ax.plot(g["j"], g["accuracy"], color=colors.get(l, "k"), label=f"{l}→{ref}")
        ax.axhline(threshold, ls="--", color="0.4", lw=0.8)
        ax.set_xlabel("hidden index j")
        ax.set_title(f"{model_name}: {'pooled states h' if space == 'h' else 'updates Δh'}")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("cross-lingual NN accuracy")
    axes[1].legend()
    _int_xticks(*axes)
    return save_figure(fig, stem)


def plot_contrib_gram(G: np.ndarray, model_name: str, stem) -> list[Path]:
    """Heatmap of the mean |cos| between layer contributions."""
    from zhunt.report.figures import new_figure, save_figure

    fig, ax = new_figure(width=4.8, height=4.0)
    ax.grid(False)
    im = ax.imshow(G, vmin=0, vmax=1, cmap="viridis", origin="upper")
    fig.colorbar(im, ax=ax, label="mean |cos(f_j, f_k)|")
    ax.set_xlabel("layer k")
    ax.set_ylabel("layer j")
    ax.set_title(f"{model_name}: layer contributions")
    _int_xticks(ax)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, stem)


def plot_crossmap(cm: pd.DataFrame, langs, model_name: str, stem) -> list[Path]:
    """Held-out R² (Procrustes dashed, affine solid) and affine κ vs depth, for pairs into the reference."""
    from zhunt.report.figures import new_figure, save_figure

    fig, (a, b) = new_figure(1, 2, width=9.0, height=3.4)
    colors = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
    for c, l in zip(colors, langs):
        ref = reference_language(l, langs)
        g = cm[(cm["src"] == l) & (cm["tgt"] == ref)]
        a.plot(g["j"], g["affine_r2_heldout"], color=c, label=f"{l}→{ref} affine")
        a.plot(g["j"], g["procrustes_r2_heldout"], color=c, ls="--", lw=1)
        b.semilogy(g["j"], g["affine_kappa"], color=c, label=f"{l}→{ref}")
    a.set_xlabel("hidden index j")
    a.set_ylabel("held-out R² (dashed: Procrustes)")
    a.set_ylim(max(-1.0, float(np.nanmin(cm["procrustes_r2_heldout"])) - 0.05), 1.02)
    a.set_title(f"{model_name}: cross-lingual maps")
    a.legend(fontsize=6)
    b.set_xlabel("hidden index j")
    b.set_ylabel("κ of affine map")
    b.legend(fontsize=6)
    _int_xticks(a, b)
    return save_figure(fig, stem)


def plot_garch(out: pd.DataFrame, stem, level: float = 0.05) -> list[Path]:
    """Histogram of fitted GARCH ``beta`` values, significant fits highlighted."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, ax = new_figure(width=5.0, height=3.2)
    ok = out[out["status"] == "ok"]
    bins = np.linspace(0, 1, 21)
    ax.hist(ok.loc[~ok["beta_significant"], "beta"], bins=bins, color="0.7", label=f"p ≥ {level}")
    ax.hist(ok.loc[ok["beta_significant"], "beta"], bins=bins, color=SERIES_COLORS["attention"], alpha=0.8,
            label=f"p < {level}")
    ax.set_xlabel(r"GARCH(1,1) $\beta$")
    ax.set_ylabel("series")
    ax.set_title(f"volatility persistence ({len(ok)} fits)")
    ax.legend()
    return save_figure(fig, stem)
