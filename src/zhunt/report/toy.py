"""The figure of the toy check of seed 003's Theorem 1 (:mod:`zhunt.experiments.toy`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_toy"]


def plot_toy(df: pd.DataFrame, curve, fig_stem) -> list[Path]:
    """Two panels: normalised singular values vs ``sqrt(rho)`` prediction; training loss curve."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, (a, b) = new_figure(1, 2, width=8.0, height=3.2)
    a.plot(df["rank"], df["sqrt_rho_norm"], "o-", color=SERIES_COLORS["chance"], label=r"$\sqrt{\rho_i/\rho_{max}}$")
    a.plot(df["rank"], df["sigma_norm"], "x", color=SERIES_COLORS["marker"], ms=7,
           label=r"trained $\sigma_i/\sigma_{max}$")
    a.set_xlabel("direction (sorted)")
    a.set_ylabel("normalised singular value")
    a.set_title("Theorem 1: shared map spectrum")
    a.legend()
    c = np.asarray(curve, np.float64)
    b.semilogy(np.arange(1, len(c) + 1), c - c.min() + 1e-16, color=SERIES_COLORS["attention"])
    b.set_xlabel("gradient-descent step")
    b.set_ylabel("loss - final loss")
    b.set_title("convergence")
    return save_figure(fig, fig_stem)
