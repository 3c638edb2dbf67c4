"""Markdown and the figure of the QK-operator stage (:mod:`zhunt.weights.qk`, seed 004).

Every function takes the result dict of :func:`zhunt.weights.qk.analyse_qk` (and the tables
built from it) and returns text or writes ``{stem}.pdf`` / ``{stem}.png``.
"""

from __future__ import annotations

import numpy as np

from zhunt.weights.qk import layer_groups, qk_verdict, verdict_criteria

__all__ = ["markdown_table", "anchor_markdown", "sign_markdown", "verdict_markdown", "plot_qk_heatmap"]


def markdown_table(df, fmt: str = ".4f") -> str:
    """Markdown table with integer columns printed as integers and the others with ``fmt``."""
    fmts = ["d" if str(t).startswith("int") else fmt for t in df.dtypes]
    return df.astype(object).to_markdown(index=False, floatfmt=fmts, intfmt="d")


def anchor_markdown(anchor_df, res: dict, model_name: str, factors: str) -> str:
    """``qk_anchor.md``: a caption naming every column of ``anchor_df`` (:func:`zhunt.weights.qk.anchor_table`)."""
    cap = (f"QK operators of {model_name} ({factors} factors) against anchor layer {res['anchor']}: head-mean "
           "operator cosine, optimal scalar T (g_L ≈ T g_anchor), residual sqrt(1 − cos²) (per head, averaged), "
           "fraction of positive eigenvalues of (g + gᵀ)/2, principal-angle cosines (mean, min) between "
           f"top-{res['topk']} eigen-subspaces (Haar-random level {res['pa_random_baseline']:.3f}), and top-1 "
           f"eigenvector overlap ⟨a₀, b₀⟩², all averaged over {res['num_heads']} heads.\n\n")
    return cap + markdown_table(anchor_df) + "\n"


def sign_markdown(sign_df, res: dict) -> str:
    """``qk_sign_agreement.md``: caption (the depth groups) and ``sign_df`` (:func:`zhunt.weights.qk.sign_table`)."""
    groups = layer_groups(res["num_layers"])
    gtxt = ", ".join(f"{g} = layers {idx[0]}–{idx[-1]}" for g, idx in groups.items() if idx.size)
    return (f"Curvature-sign agreement with anchor layer {res['anchor']}: fraction of the top-k "
            f"eigenvalues (by magnitude) of (g + gᵀ)/2 with the anchor's sign at the same "
            f"rank, averaged over heads and layers ({gtxt}).\n\n" + markdown_table(sign_df) + "\n")


def verdict_markdown(res: dict, model_name: str, factors: str) -> str:
    """``qk_verdict.md``: the headline numbers, the bands and the verdict."""
    nL = res["num_layers"]
    return "\n".join([
        f"# QK operator alignment: {model_name}",
        "",
        f"{nL} layers, {res['num_heads']} heads, d_head = {res['head_dim']}, d = {res['hidden_size']}; "
        f"factors = {factors}; anchor layer {res['anchor']}.",
        "",
        f"- mean operator cosine to the anchor (anchor excluded; the verdict's statistic): "
        f"**{res['mean_cos_to_anchor_excl']:+.4f}**",
        f"- same with the anchor's self-cosine of 1 included, as seed 004 writes it: "
        f"{res['mean_cos_to_anchor']:+.4f} (band: {qk_verdict(res['mean_cos_to_anchor'])[0]}; biased upwards "
        f"by (1 − mean) / {nL})",
        f"- mean operator cosine of adjacent layers: {res['adjacent_mean']:+.4f}",
        f"- mean principal-angle cosine of top-{res['topk']} eigen-subspaces to the anchor (anchor excluded): "
        f"{res['pa_mean_cos_excl']:.4f} (Haar-random subspaces: {res['pa_random_baseline']:.4f})",
        f"- curvature-sign agreement with the anchor, top-2 / top-{max(res['sign'])}: "
        f"{res['sign'][min(res['sign'])].mean():.3f} / {res['sign'][max(res['sign'])].mean():.3f}",
        f"- fraction of positive eigenvalues of (g + gᵀ)/2: {res['frac_positive'].min():.3f}–"
        f"{res['frac_positive'].max():.3f} (0.5 is forced by Sylvester's law of inertia whenever "
        "[W_Q; W_K] has full rank 2 d_head ≤ d)",
        "",
        f"Bands: {verdict_criteria()}.",
        "",
        f"**Verdict: {res['verdict']}** — {res['verdict_text']}.",
        "",
    ])


def plot_qk_heatmap(res: dict, stem, model_name: str, factors: str) -> list:
    """Heatmap of the head-mean operator cosine ``cos(g_L, g_L')`` of every layer pair."""
    from zhunt.report.figures import new_figure, save_figure

    cos = res["cos"]
    fig, ax = new_figure(width=5.2, height=4.4)
    ax.grid(False)
    lim = max(float(np.abs(cos).max()), 1e-12)
    im = ax.imshow(cos, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    fig.colorbar(im, ax=ax, label="head-mean operator cosine")
    ax.set_xlabel("layer L'")
    ax.set_ylabel("layer L")
    ax.set_title(f"{model_name}: cos(g_L, g_L') of QK operators ({factors})\n"
                 f"mean to anchor L={res['anchor']} (anchor excluded): "
                 f"{res['mean_cos_to_anchor_excl']:+.3f} -> {res['verdict']}",
                 fontsize=9)
    return save_figure(fig, stem)
