"""Reading the shapes of a rule's named outputs (the only place output paths come from).

The rule files declare a table as ``report_table(stem, ...)`` (``[stem.tsv, stem.md]``) and a
figure as ``report_figure(stem, ...)`` (``[stem.pdf, stem.png]``); these helpers take such an
entry of ``outputs`` apart, so a stage never builds a file name of its own.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["table_paths", "figure_stem", "optional_path"]


def table_paths(output) -> tuple[str, str]:
    """``(tsv, md)`` of a ``report_table`` output (a list ``[stem.tsv, stem.md]``)."""
    tsv, md = list(output)
    return str(tsv), str(md)


def figure_stem(output) -> Path:
    """The stem ``save_figure`` writes ``.pdf`` and ``.png`` next to, from a ``report_figure`` output
    (``[stem.pdf, stem.png]``); both paths must share that stem."""
    paths = [Path(p) for p in output]
    stems = {p.with_suffix("") for p in paths}
    if len(stems) != 1 or sorted(p.suffix for p in paths) != [".pdf", ".png"]:
        raise ValueError(f"a figure output is [stem.pdf, stem.png], got {list(map(str, paths))}")
    return stems.pop()


def optional_path(value):
    """The single path of an optional input (``[]`` / ``None`` -> None)."""
    if value is None or isinstance(value, (str, Path)):
        return value
    value = list(value)
    return value[0] if value else None
