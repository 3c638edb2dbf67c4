"""Exp. C (ARD-MMD) rendering: the summary Markdown and the three summary figures.

The numbers come from :mod:`zhunt.activations.ard` (:func:`~zhunt.activations.ard.summary_table`,
:func:`~zhunt.activations.ard.seed_collapse`, :func:`~zhunt.activations.ard.ard_headline`); run
trajectories are the ``{(layer, objective, basis, init, lambda): run}`` mapping of
:func:`zhunt.stages.ard.read_run_files`.
"""

from __future__ import annotations

import math

import numpy as np

from zhunt.activations.ard import BIMODAL_ASHMAN_D, BIMODAL_BIC_GAIN, OBJECTIVES, middle_lambda, z_criteria
from zhunt.report.figures import new_figure, save_figure

__all__ = ["summary_markdown", "plot_z_size", "plot_spectrum", "plot_trajectories"]


def _md(df) -> str:
    return df.to_markdown(index=False, floatfmt=".4g") + "\n"


def summary_markdown(table, primary, model, collapse, headline=None) -> str:
    """The Exp. C summary report: headline |Z|, |Z| vs layer, bimodality, SVD overlap, the collapse."""
    lines = [f"# Exp. C — ARD-MMD ({model})", ""]
    if headline is not None:
        h = headline.iloc[0]
        lines += ["## Headline |Z|", "",
                  f"Layer {int(h['layer'])}, {h['objective']} objective, {h['basis']} basis, {h['init']} start, "
                  f"λ = {h['lambda']:g}: **|Z| = {int(h['z_size'])} of {int(h['d'])}** ({h['z_rule']}; BIC gain "
                  f"{h['bic_gain']:.3g}, Ashman D {h['ashman_d']:.3g}); refit on half of the problems: "
                  f"|Z| = {int(h['z_size_fit'])}. Held-out tests with the learned kernel: language p = "
                  f"{h['p_language']:.3g}, problem p = {h['p_problem']:.3g} → the kernel separates "
                  f"**{h['heldout_verdict']}**. (The seed's pooled-median count for the same run: "
                  f"{h['z_size_median']}.)", "", f"Criteria: {h['criteria']}.", ""]
    lines += ["Lengthscales in standardised units (log ell = 0: median heuristic). |Z| (`z_size`) = the "
              "mixture-model count: " + z_criteria() + ". The seed's count #{ell_j < tau}, tau = median of the "
              "converged ell pooled over layers and λ of the same objective, basis and init (`z_size_median`), "
              "is kept for comparison: pooled over runs it forces the mean count to d/2.", ""]
    lines += ["## |Z| vs layer", ""]
    piv = table.pivot_table(index=["objective", "basis", "init", "lambda"], columns="layer",
                            values="z_size", aggfunc="first")
    piv.columns = [f"L{c}" for c in piv.columns]
    lines += [_md(piv.reset_index()), ""]
    prim = table[table["layer"] == primary]
    lines += [f"## Lengthscale spectrum at layer {primary}: bimodality", "",
              "bic_gain = BIC(1 Gaussian) - BIC(2-Gaussian mixture) on log10 ell (> 0 favours two modes; "
              f"any non-Gaussian shape can give a gain); Ashman's D = separation of the modes. Bimodal (the "
              f"|Z| rule) = bic_gain > {BIMODAL_BIC_GAIN:g} and Ashman's D > {BIMODAL_ASHMAN_D:g}.", ""]
    lines += [_md(prim[["objective", "basis", "init", "lambda", "bic_gain", "ashman_d", "z_size", "z_rule",
                        "z_size_median"]]), ""]
    lines += [f"## Overlap of ARD-Z with SVD-Z at layer {primary}", "",
              "Fraction of ARD's surviving axes among the top-|Z| axes by z-energy (median threshold of the "
              "layer's own grid), chance = |T|/d, hypergeometric p.", ""]
    lines += [_md(prim[["objective", "basis", "init", "lambda", "n_active_median", "overlap_svd",
                        "overlap_chance", "overlap_p", "z_size_median", "overlap_pooled", "overlap_pooled_chance"]]),
              ""]
    lines += ["## Collapse of the seed objective", ""]
    if collapse:
        lines += [f"The seed objective (sum_i MMD² + λ sum 1/ell) has its infimum at ell -> inf. Over "
                  f"{collapse['n_runs']} runs (budget {collapse['max_steps']} steps) the plateau stop fired in "
                  f"{collapse['n_converged']}; the median log10 ell rose by {collapse['median_log10_rise']:.3g} "
                  f"(median over runs) and was still rising at {collapse['median_growth_per_100_steps']:.3g} per "
                  f"100 steps at the end (slowest run: {collapse['min_growth_per_100_steps']:.3g}), its 10th "
                  f"percentile (the most-used axes) at {collapse['median_growth_q10_per_100_steps']:.3g}; a median "
                  f"{100 * collapse['median_frac_grown']:.0f}% of the axes ended with a larger ell than they "
                  "started with. Whatever 'survives' reflects the step budget, not an optimum. (A well-posed "
                  "objective also sends unused axes to infinity, which moves the median; the 10th percentile "
                  "tells the two apart.)", ""]
        sr = table[table["objective"] == "seed"]
        lines += [_md(sr[["layer", "basis", "init", "lambda", "steps", "converged", "log10_ell_median_start",
                          "log10_ell_median_end", "growth_per_100_steps", "growth_q10_per_100_steps",
                          "frac_grown", "mmd_lang"]]), ""]
        wp = table[table["objective"] == "wellposed"]
        if len(wp):
            lines += ["For comparison, the well-posed objective:", ""]
            lines += [_md(wp[["layer", "basis", "init", "lambda", "steps", "converged", "log10_ell_median_end",
                              "growth_per_100_steps", "growth_q10_per_100_steps", "mmd_lang", "mmd_problem"]]),
                      ""]
    else:
        lines += ["(seed objective not run)", ""]
    return "\n".join(lines)


_INIT_STYLE = {"warm": "-", "cold": "--"}
_BASIS_COLOR = {"coord": "#0072B2", "rotated": "#D55E00"}


def plot_z_size(table, model, stem):
    objs = [o for o in OBJECTIVES if o in set(table["objective"])]
    fig, axes = new_figure(1, len(objs), width=4.2 * len(objs), height=3.4,
                           squeeze=False, layout="constrained")
    lams = sorted(set(table["lambda"]))
    markers = dict(zip(lams, "osd^v<>"))
    for ax, obj in zip(axes[0], objs):
        sub = table[table["objective"] == obj]
        for (basis, init, lam), g in sub.groupby(["basis", "init", "lambda"]):
            g = g.sort_values("layer")
            ax.plot(g["layer"], g["z_size"], _INIT_STYLE.get(init, "-"), marker=markers[lam],
                    color=_BASIS_COLOR.get(basis), label=f"{basis}/{init}/λ={lam:g}")
        ax.set_xlabel("layer")
        ax.set_ylabel("|Z| (mixture-model count)")
        ax.set_title(f"{model}: {obj}")
    axes[0][-1].legend(fontsize=6, ncol=1, loc="best")
    return save_figure(fig, stem)


def plot_spectrum(runs, primary, model, stem):
    keys = [k for k in runs if k[0] == primary]
    objs = [o for o in OBJECTIVES if any(k[1] == o for k in keys)]
    fig, axes = new_figure(len(objs), 2, width=8.0, height=2.8 * len(objs),
                           squeeze=False, layout="constrained")
    for row, obj in zip(axes, objs):
        ks = [k for k in keys if k[1] == obj]
        lam = middle_lambda({k[4] for k in ks})
        for k in sorted(k for k in ks if k[4] == lam):
            x = runs[k]["log_ell"] / math.log(10)
            lab = f"{k[2]}/{k[3]}"
            row[0].hist(x, bins=40, histtype="step", color=_BASIS_COLOR.get(k[2]),
                        linestyle=_INIT_STYLE.get(k[3], "-"), label=lab)
            row[1].plot(np.sort(x), _INIT_STYLE.get(k[3], "-"), color=_BASIS_COLOR.get(k[2]), label=lab)
        row[0].set_xlabel("log10 ell")
        row[0].set_ylabel("axes")
        row[0].set_title(f"{obj}, L{primary}, λ={lam:g}: histogram")
        row[1].set_xlabel("rank")
        row[1].set_ylabel("log10 ell (sorted)")
        row[1].set_title("sorted spectrum")
        row[1].legend(fontsize=7)
    fig.suptitle(f"{model}: ARD lengthscale spectrum")
    return save_figure(fig, stem)


def plot_trajectories(runs, primary, model, stem):
    keys = [k for k in runs if k[0] == primary]
    objs = [o for o in OBJECTIVES if any(k[1] == o for k in keys)]
    fig, axes = new_figure(1, len(objs), width=4.2 * len(objs), height=3.4,
                           squeeze=False, layout="constrained")
    lams = sorted({k[4] for k in keys})
    colors = dict(zip(lams, ["#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000"]))
    for ax, obj in zip(axes[0], objs):
        for k in sorted(k for k in keys if k[1] == obj and k[2] == "coord"):
            r = runs[k]
            q = np.percentile(r["trajectory"], [10, 50, 90], axis=1) / math.log(10)
            ax.plot(r["steps"], q[1], _INIT_STYLE.get(k[3], "-"), color=colors[k[4]], label=f"{k[3]}/λ={k[4]:g}")
            ax.fill_between(r["steps"], q[0], q[2], color=colors[k[4]], alpha=0.08)
        ax.set_xlabel("step")
        ax.set_ylabel("log10 ell (median, 10-90%)")
        ax.set_title(f"{obj} (coord basis), L{primary}")
        ax.legend(fontsize=7)
    fig.suptitle(f"{model}: ARD trajectories")
    return save_figure(fig, stem)
