"""Figures of Exp. D, the bridge between languages inside Z (:mod:`zhunt.experiments.bridge`)."""

from __future__ import annotations

import numpy as np

from zhunt.experiments.bridge import DIRECTIONS, ESTIMATORS

__all__ = ["plot_spectra", "plot_loo", "plot_null"]

_EST_COLOR = {"lstsq": "#0072B2", "ridge": "#009E73", "procrustes": "#D55E00", "affine": "#CC79A7"}
_LINESTYLES = ["-", "--", ":", "-."]


def plot_spectra(sp, model, stem) -> list:
    """Singular values of every pooled-level ``W``, one panel per direction and k (log scale)."""
    from zhunt.report.figures import new_figure, save_figure

    ks = sorted(set(sp["k"]))
    fig, axes = new_figure(len(DIRECTIONS), len(ks), width=3.6 * len(ks), height=5.6,
                           squeeze=False, layout="constrained")
    layers = sorted(set(sp["layer"]))
    for r, direction in enumerate(DIRECTIONS):
        for c, k in enumerate(ks):
            ax = axes[r][c]
            sub = sp[(sp["k"] == k) & (sp["direction"] == direction) & (sp["level"] == "pooled")]
            for (layer, est), g in sub.groupby(["layer", "estimator"]):
                ax.semilogy(g["index"] + 1, np.maximum(g["sigma"], 1e-16), _LINESTYLES[layers.index(layer) % 4],
                            color=_EST_COLOR.get(est), label=f"{est} L{layer}")
            ax.set_title(f"{direction}, k={k} (pooled)")
            ax.set_xlabel("index")
            ax.set_ylabel("singular value of W")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{model}: bridge singular spectra")
    return save_figure(fig, stem)


def plot_loo(table, model, stem) -> list:
    """Leave-one-out R² against k per level and direction, with the null's 95% quantile (faint)."""
    from zhunt.report.figures import new_figure, save_figure

    levels = [lv for lv in ("pooled", "token") if lv in set(table["level"])]
    fig, axes = new_figure(len(levels), len(DIRECTIONS), width=8.0, height=3.0 * len(levels),
                           squeeze=False, layout="constrained")
    layers = sorted(set(table["layer"]))
    for r, level in enumerate(levels):
        for c, direction in enumerate(DIRECTIONS):
            ax = axes[r][c]
            sub = table[(table["level"] == level) & (table["direction"] == direction)]
            for (layer, est), g in sub.groupby(["layer", "estimator"]):
                g = g.sort_values("k")
                ls = _LINESTYLES[layers.index(layer) % 4]
                ax.plot(g["k"], g["r2_loo"], ls, marker="o", color=_EST_COLOR.get(est), label=f"{est} L{layer}")
                ax.plot(g["k"], g["r2_loo_null_q95"], ls, color=_EST_COLOR.get(est), alpha=0.35, linewidth=0.8)
            ax.axhline(0, color="#555555", linewidth=0.6)
            ax.set_title(f"{level}, {direction} (faint: null 95%)")
            ax.set_xlabel("k")
            ax.set_ylabel("LOO R²")
            lo = np.nanmin(sub["r2_loo"]) if len(sub) else -1
            ax.set_ylim(max(-1.0, min(lo, 0) - 0.05), 1.05)
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(f"{model}: bridge leave-one-out R² vs k")
    return save_figure(fig, stem)


def plot_null(table, null_df, model, stem) -> list:
    """Permutation-null histograms of LOO R² with the observed value, first layer, largest k, en->zh."""
    from zhunt.report.figures import new_figure, save_figure

    levels = [lv for lv in ("pooled", "token") if lv in set(table["level"])]
    fig, axes = new_figure(len(levels), len(ESTIMATORS), width=11.0, height=2.8 * len(levels),
                           squeeze=False, layout="constrained")
    layer = sorted(set(table["layer"]))[0]
    k = max(table["k"])
    direction = "en->zh"
    for r, level in enumerate(levels):
        for c, est in enumerate(ESTIMATORS):
            ax = axes[r][c]
            sel = dict(layer=layer, k=k, direction=direction, level=level, estimator=est)
            q = np.ones(len(null_df), dtype=bool) if len(null_df) else np.zeros(0, dtype=bool)
            for key, v in sel.items():
                if len(null_df):
                    q &= null_df[key].to_numpy() == v
            vals = null_df.loc[q, "r2_loo"].to_numpy() if len(null_df) else np.zeros(0)
            vals = vals[np.isfinite(vals)]
            if len(vals):
                ax.hist(np.clip(vals, -2, 1), bins=30, color="#999999")
            row = table[(table["layer"] == layer) & (table["k"] == k) & (table["direction"] == direction)
                        & (table["level"] == level) & (table["estimator"] == est)]
            if len(row):
                obs = float(row["r2_loo"].iloc[0])
                ax.axvline(max(obs, -2), color=_EST_COLOR[est], linewidth=2)
                ax.set_title(f"{level} {est}: R²={obs:.3g}, p={float(row['p_loo'].iloc[0]):.3g}", fontsize=7)
            ax.set_xlabel("null LOO R² (clipped at -2)")
    fig.suptitle(f"{model}: bridge LOO R² vs permutation null (L{layer}, k={k}, {direction})")
    return save_figure(fig, stem)
