"""Glue: one model's summary page, headline JSON and checklist (see zhunt.report.summary)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.report.summary import write_model_summary


def main(smk):
    def href(path):
        # links resolve inside the report (`snakemake --report results/report.zip`)
        p = Path(path)
        if p.parent.name == "tables":
            return smk.report_href(str(p.parent)).child_path(p.name)
        return smk.report_href(path)

    write_model_summary(
        Path(smk.input.metrics).parents[2],  # results/{model}/patching/metrics.tsv -> results
        smk.wildcards.model,
        smk.output.html,
        smk.output.json,
        smk.output.checklist,
        href=href,
    )


snakemake_main(snakemake, main)  # noqa: F821
