"""Stage of rule ``toy_theorem``: seed 003's Theorem 1 checked on a shared bilingual linear map."""

from __future__ import annotations

import logging

from zhunt.io import write_table
from zhunt.stages.paths import figure_stem, table_paths

__all__ = ["run_toy_theorem"]

log = logging.getLogger("zhunt.stages.toy")


def run_toy_theorem(inputs, params, outputs, *, wildcards=None, threads=1, seed: int = 0) -> None:
    """Rule ``toy_theorem``: the per-direction table (``outputs["table"]``: [tsv, md]) of
    :func:`zhunt.experiments.toy.toy_theorem` and its figure (``outputs["fig"]``)."""
    from zhunt.experiments.toy import toy_theorem
    from zhunt.report.toy import plot_toy

    res = toy_theorem(seed=seed)
    write_table(res["table"], *table_paths(outputs["table"]))
    plot_toy(res["table"], res["loss_curve"], figure_stem(outputs["fig"]))
    log.info("toy theorem: max rel. error %.2e after %d GD steps", res["rel_error_max"], res["n_iter"])
