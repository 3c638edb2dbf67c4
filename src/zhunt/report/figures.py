"""Figure helpers shared by every stage: one style, atomic PDF + PNG output.

Every figure of the workflow is written twice, as ``{stem}.pdf`` (vector, for
the paper) and ``{stem}.png`` (raster, for the HTML report), each through
:func:`zhunt.io.atomic_path` so a figure is never half-written. Matplotlib
runs on the non-interactive Agg backend; PDF metadata carry no creation date,
so re-running a stage on the same numbers gives byte-identical PDFs.

Usage::

    from zhunt.report.figures import new_figure, save_figure

    fig, ax = new_figure()
    ax.plot(x, y)
    save_figure(fig, "results/qwen/figures/effective_rank")   # writes .pdf and .png
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never open a window, also when imported from a workflow script

import matplotlib.pyplot as plt  # noqa: E402

from zhunt.io import atomic_path  # noqa: E402

__all__ = ["STYLE", "PHASE_COLORS", "SERIES_COLORS", "apply_style", "new_figure", "save_figure"]

#: rcParams every figure uses (applied by :func:`apply_style` / :func:`new_figure`).
STYLE: dict = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in PDFs (editable text, accepted by journals)
}

#: Background colours of the encode / compute / decode depth phases.
PHASE_COLORS: dict = {"encode": "#fde0c5", "compute": "#dbe9f6", "decode": "#e5d8ef"}

#: Colour-blind-safe series colours (Okabe–Ito), by role.
SERIES_COLORS: dict = {
    "attention": "#0072B2",
    "gate": "#D55E00",
    "up": "#009E73",
    "down": "#CC79A7",
    "similarity": "#E69F00",
    "chance": "#555555",
    "marker": "#C00000",
}

_FORMATS = ("pdf", "png")
_METADATA = {"pdf": {"CreationDate": None, "ModDate": None, "Producer": None},
             "png": {"Software": None}}


def apply_style() -> None:
    """Set the shared rcParams (:data:`STYLE`) globally."""
    plt.rcParams.update(STYLE)


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 6.0, height: float = 3.5, **kwargs):
    """``plt.subplots`` with the shared style; returns ``(fig, axes)``.

    Parameters
    ----------
    nrows, ncols : int
        Subplot grid.
    width, height : float
        Figure size in inches.
    **kwargs
        Passed to :func:`matplotlib.pyplot.subplots` (``sharex=True`` etc.).
    """
    apply_style()
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def save_figure(fig, stem: str | os.PathLike, formats: tuple[str, ...] = _FORMATS, close: bool = True) -> list[Path]:
    """Write ``fig`` as ``{stem}.pdf`` and ``{stem}.png`` atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    stem : str or path
        Output path without extension (an extension given anyway is dropped
        when it is one of ``formats``).
    formats : tuple of str
        File formats to write, default ``("pdf", "png")``.
    close : bool
        Close the figure afterwards (frees its memory; default True).

    Returns
    -------
    list of Path
        The files written, in the order of ``formats``.
    """
    stem = Path(stem)
    if stem.suffix.lstrip(".") in formats:
        stem = stem.with_suffix("")
    written = []
    try:
        for fmt in formats:
            path = stem.parent / f"{stem.name}.{fmt}"
            with atomic_path(path, suffix=f".{fmt}") as tmp:
                fig.savefig(tmp, format=fmt, metadata=_METADATA.get(fmt))
            written.append(path)
    finally:
        if close:
            plt.close(fig)
    return written
