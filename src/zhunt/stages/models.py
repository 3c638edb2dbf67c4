"""Stages of the model rules: ``prepare_model`` and ``train_organism`` (``workflow/rules/models.smk``)."""

from __future__ import annotations

import logging

log = logging.getLogger("zhunt.stages.models")

__all__ = ["run_prepare_model", "run_train_organism"]


def run_prepare_model(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Materialise ``models.<model>`` (``params.spec``) as a HF folder at ``outputs.model``
    (:func:`zhunt.models.loader.prepare_model_folder`)."""
    from zhunt.models.loader import prepare_model_folder

    prepare_model_folder(wildcards["model"], dict(params["spec"]), outputs["model"])


def run_train_organism(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Train the organism with ``params.train`` into ``outputs.model`` and write its training
    report: loss curve ``outputs.loss`` (TSV), held-out exact match ``outputs.accuracy`` (TSV),
    ``outputs.report`` (Markdown), ``outputs.figure`` (PNG)."""
    from pathlib import Path

    from zhunt.io import write_table, write_text
    from zhunt.models.organism import train_organism
    from zhunt.report.organism import (accuracy_table, loss_curve_table, training_loss_figure,
                                       training_report_markdown)

    report = train_organism(Path(outputs["model"]), threads=max(1, int(threads)), **dict(params["train"]))
    write_table(loss_curve_table(report), outputs["loss"])
    write_table(accuracy_table(report), outputs["accuracy"])
    write_text(outputs["report"], training_report_markdown(report))
    training_loss_figure(report, outputs["figure"])
    log.info("organism accuracy %s in %.1fs", report.get("accuracy"), report.get("wall_time_s", 0.0))
