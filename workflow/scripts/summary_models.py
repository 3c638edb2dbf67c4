"""Glue: the cross-model page and table (see zhunt.report.summary.write_models_summary)."""

from zhunt.io import snakemake_main
from zhunt.report.summary import write_models_summary


def main(smk):
    write_models_summary(
        list(smk.input), smk.output.html, smk.output.table, href=smk.report_href
    )


snakemake_main(snakemake, main)  # noqa: F821
