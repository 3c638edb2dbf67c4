"""Markdown and figures of the layer-prediction test (:mod:`zhunt.experiments.layerpred`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from zhunt.experiments.layerpred import (ALPHA, CAUSAL_SCORES, NEAR_FRAC, PREDICT_FRAC, PRIMARY_POOLING,
                                         thresholds_caption)
from zhunt.report.structure import int_xticks, shade_phases
from zhunt.weights.structure import Phases

__all__ = ["verdict_markdown", "plot_layer_profiles", "plot_models_layer_prediction"]


def verdict_markdown(model: str, comp: pd.DataFrame, corr: pd.DataFrame, num_layers: int, site: str, k) -> str:
    """``layers/verdict.md``: the primary pair's verdict and numbers, the thresholds, both tables
    (``comp`` and ``corr`` without their ``model`` column)."""
    p = comp[comp["primary"]].iloc[0]
    lines = [f"# Do the weights predict the layer? {model}", "",
             f"**Verdict: {p['verdict']}** (pre-registered pair: {p['weight_score']} vs {p['data_score']}, "
             f"{PRIMARY_POOLING} pooling, site {site}, k={k}).", "",
             f"- predicted layer (weights only): L{int(p['predicted_layer'])} of {num_layers}",
             f"- data-best layer ({p['data_score']}): "
             + (f"L{int(p['data_best_layer'])}, distance {int(p['distance_layers'])} layers = "
                f"{p['distance_frac']:.3f} of depth (chance of a hit this close: {p['location_p']:.3f})"
                if np.isfinite(p["data_best_layer"]) else "n/a"),
             f"- Spearman rho = {p['rho']:.3f}, shift-permutation p = {p['p_shift']:.3f} "
             f"(smallest attainable {p['p_min']:.3f}, n = {int(p['n_layers'])} layers)", "",
             f"Thresholds: {thresholds_caption()}.", "", "## Per data score (exploratory except the primary)", "",
             comp.to_markdown(index=False, floatfmt=".4g"), "",
             "## Every weight score x data score (p_holm: Holm across this grid)", "",
             corr.to_markdown(index=False, floatfmt=".4g"), ""]
    return "\n".join(lines)


def plot_layer_profiles(scores: pd.DataFrame, data: pd.DataFrame, comparison: pd.DataFrame, model: str,
                        stem) -> list:
    """Weight-only and data scores against depth on one page (shared x-axis).

    Phases are shaded, the predicted layer is a dashed line on every panel and each data
    score's best layer a star on its own panel; a causal score measured at some layers only
    (DAS) is drawn through those layers.
    """
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    labels = list(scores["phase"])
    enc = [l for l, ph in enumerate(labels) if ph == "encode"]
    dec = [l for l, ph in enumerate(labels) if ph == "decode"]
    phases = Phases(labels=labels, encode_last=enc[-1] if enc else -1, decode_first=dec[0] if dec else len(labels),
                    encode_rise=math.nan, decode_drop=math.nan)  # only the labels are drawn
    x = scores["layer"].to_numpy()
    pred = int(scores.loc[scores["predicted"].astype(bool), "layer"].iloc[0])
    best = {r["data_score"]: r["data_best_layer"] for _, r in comparison.iterrows()}
    causal = [c for c in CAUSAL_SCORES if c in data.columns]
    n_panels = 6 + (1 if causal else 0)
    fig, axes = new_figure(n_panels, 1, width=6.5, height=1.45 * n_panels + 0.6, sharex=True)
    ca, cg, cs = SERIES_COLORS["attention"], SERIES_COLORS["gate"], SERIES_COLORS["similarity"]
    cm, cc = SERIES_COLORS["marker"], SERIES_COLORS["chance"]

    ax = axes[0]
    m, s = scores["attn_eff_rank_mean"], scores["attn_eff_rank_std"]
    ax.fill_between(x, m - s, m + s, color=ca, alpha=0.2, lw=0)
    ax.plot(x, m, "o-", color=ca, label="attention eff. rank (head mean ± std)")
    ax.set_ylabel("eff. rank")
    ax2 = axes[1]
    ax2.plot(x, scores["attn_eff_rank_cv"], "o-", color=ca, label="eff. rank CV across heads")
    ax2.set_ylabel("CV")
    ax3 = axes[2]
    ax3.plot(x, scores["ffn_ratio"], "o-", color=cg, label="FFN alignment / chance")
    ax3.axhline(1.0, color=cc, ls=":", lw=1)
    ax3.set_ylabel("FFN / chance")
    ax4 = axes[3]
    ax4.plot(x, scores["sim_prev"], "o-", color=cs, label="similarity to previous layer")
    ax4.plot(x, scores["drop_after"], "s--", color=cs, alpha=0.7, label="drop after layer")
    ax4.set_ylabel("Grassmann sim.")
    dx = data["layer"].to_numpy()
    ax5 = axes[4]
    ax5.fill_between(dx, data["ratio_rand_lo"], data["ratio_rand_hi"], color=cc, alpha=0.2, lw=0,
                     label="random k-dim, 95%")
    ax5.plot(dx, data["ratio_Z"], "o-", color=ca, label="ratio_Z")
    ax5.plot(dx, data["ratio_Zperp"], "s-", color=cg, label="ratio_Z⊥")
    ax5.set_ylabel("Phase 2 ratio")
    ax6 = axes[5]
    ax6.plot(dx, data["rel_ratio"], "o-", color=cm, label="ratio_Z / ratio_Z⊥ (primary)")
    ax6.plot(dx, data["E_lang_Z_over_chance"], "^:", color=cs, label="language energy in Z / (k/d)")
    ax6.axhline(1.0, color=cc, ls=":", lw=1)
    ax6.set_ylabel("data score")
    for name, axx in (("rel_ratio", ax6), ("E_lang_Z_over_chance", ax6)):
        b = best.get(name)
        if b is not None and np.isfinite(b):
            axx.plot([b], [float(data.loc[data["layer"] == b, name].iloc[0])], "*", color=cm, ms=11, zorder=5)
    if causal:
        ax7 = axes[6]
        for c, mk in zip(causal, "osd^"):
            ok = data[c].notna().to_numpy()  # DAS is swept at a subset of layers: join the swept ones
            ax7.plot(dx[ok], data[c].to_numpy()[ok], marker=mk, ls="-", label=c)
            b = best.get(c)
            if b is not None and np.isfinite(b):
                ax7.plot([b], [float(data.loc[data["layer"] == b, c].iloc[0])], "*", color=cm, ms=11, zorder=5)
        ax7.set_ylabel("causal (Exp. A)")
    for i, axx in enumerate(axes):
        shade_phases(axx, phases, label=(i == 0))
        axx.axvline(pred, color=cm, ls="--", lw=1.1, label=f"predicted L{pred}" if i == 0 else None)
        axx.legend(loc="best", fontsize=6)
    prim = comparison[comparison["primary"]].iloc[0]
    axes[0].set_title(f"{model}: weights (top 4) vs data (bottom) by depth — verdict: {prim['verdict']} "
                      f"(rho {prim['rho']:.2f}, p {prim['p_shift']:.3f})", fontsize=8)
    axes[-1].set_xlabel("decoder layer")
    axes[-1].set_xlim(-0.5, len(x) - 0.5)
    int_xticks(axes[-1])
    return save_figure(fig, stem)


def plot_models_layer_prediction(table: pd.DataFrame, stem) -> list:
    """Predicted vs data-best layer as a fraction of depth, one point per model (reference hollow)."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, ax = new_figure(width=4.8, height=4.4)
    ax.plot([0, 1], [0, 1], color=SERIES_COLORS["chance"], lw=1, ls="--", label="data-best = predicted")
    ax.fill_between([0, 1], [-NEAR_FRAC, 1 - NEAR_FRAC], [NEAR_FRAC, 1 + NEAR_FRAC], color="#cccccc", alpha=0.3,
                    lw=0, label=f"within {NEAR_FRAC} of depth ('near')")
    ax.fill_between([0, 1], [-PREDICT_FRAC, 1 - PREDICT_FRAC], [PREDICT_FRAC, 1 + PREDICT_FRAC], color="#999999",
                    alpha=0.3, lw=0, label=f"within {PREDICT_FRAC} ('predicts' if p <= {ALPHA})")
    for _, r in table.iterrows():
        if not (np.isfinite(r["predicted_frac"]) and np.isfinite(r["data_best_frac"])):
            continue
        ref = bool(r.get("reference", False))
        ax.plot([r["predicted_frac"]], [r["data_best_frac"]], "o", ms=8, mfc="none" if ref else None,
                label=f"{r['model']} ({r['verdict']})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("predicted layer / (L - 1)  (weights only)")
    ax.set_ylabel("data-best layer / (L - 1)  (Phase 2 ratio_Z / ratio_Z⊥)")
    ax.set_title("Do the weights predict the layer?")
    ax.legend(loc="upper left", fontsize=6)
    return save_figure(fig, stem)
