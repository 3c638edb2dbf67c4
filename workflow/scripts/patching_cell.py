"""Glue: one Exp. A interchange cell (see zhunt.experiments.patching_cells.run_cell)."""

from zhunt.io import snakemake_main
from zhunt.experiments.patching_cells import run_cell
from zhunt.experiments.patching_design import parse_cell


def main(smk):
    opts = smk.params.patching
    run_cell(
        smk.input.model,
        smk.input.store,
        smk.input.mask,
        smk.input.prompts,
        list(smk.params.languages),
        smk.input.templates,
        smk.params.runtime["template"],
        parse_cell(smk.wildcards.cell),
        n_donors=opts["n_donors"],
        max_new_tokens=smk.params.max_new_tokens,
        batch_size=smk.params.batch_size,
        das_path=smk.input.das[0] if smk.input.das else None,
        out_records=smk.output.records,
        threads=smk.threads,
    )


snakemake_main(snakemake, main)  # noqa: F821
