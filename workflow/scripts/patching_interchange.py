"""Glue: gather the Exp. A cells (see zhunt.report.patching_render.gather_interchange)."""

from zhunt.io import snakemake_main
from zhunt.report.patching_render import gather_interchange


def main(smk):
    gather_interchange(
        list(smk.input.cells),
        smk.params.primary,
        smk.wildcards.model,
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        out_verdict=smk.output.verdict,
        out_fig_stem=smk.output.fig[0][: -len(".pdf")],
    )


snakemake_main(snakemake, main)  # noqa: F821
