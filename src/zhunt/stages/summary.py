"""Stages of the report rules (``workflow/rules/report.smk``): ``summary`` (one model's page,
headline JSON and checklist) and ``models_summary`` (every analysed model side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["run_summary", "run_models_summary", "report_links", "summary_files"]


def report_links(smk) -> Callable[[str], str]:
    """``href(path)`` of a Snakemake job: where a file's link resolves inside the report
    (``snakemake --report results/report.zip``); a patching table is a child of its folder."""

    def href(path):
        p = Path(path)
        if p.parent.name == "tables":
            return smk.report_href(str(p.parent)).child_path(p.name)
        return smk.report_href(path)

    return href


def summary_files(inputs) -> dict:
    """The files the summary reads (:data:`zhunt.report.summary.MODEL_FILES` keys) from the rule's
    named inputs: each a path, ``figures`` a list of PNGs (keyed by their stem)."""
    files = {name: Path(path) for name, path in inputs.items() if name != "figures"}
    files["figures"] = {Path(p).stem: Path(p) for p in inputs["figures"]}
    return files


def run_summary(inputs, params, outputs, *, wildcards=None, threads=1, href=None) -> None:
    """One model's summary page ``outputs.html``, headline ``outputs.json`` and checklist
    ``outputs.checklist``, read from the analysis outputs the rule lists as ``inputs``
    (:func:`summary_files`);
    ``href`` (:func:`report_links`) makes the page's links resolve inside the report."""
    from zhunt.report.summary import write_model_summary

    write_model_summary(summary_files(inputs), wildcards["model"], outputs["html"], outputs["json"],
                        outputs["checklist"], href=href)


def run_models_summary(inputs, params, outputs, *, wildcards=None, threads=1, href=None) -> None:
    """The cross-model page ``outputs.html`` and table ``outputs.table`` from the per-model
    headline JSONs ``inputs.heads``, linking their pages ``inputs.pages`` (same order)."""
    from zhunt.report.summary import write_models_summary

    write_models_summary(list(inputs["heads"]), outputs["html"], outputs["table"], href=href,
                         pages=list(inputs["pages"]))
