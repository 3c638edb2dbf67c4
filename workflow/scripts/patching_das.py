"""Glue: the DAS subspace of one site x layer x k (see zhunt.experiments.patching_cells.fit_cell_das)."""

from zhunt.io import snakemake_main
from zhunt.experiments.patching_cells import fit_cell_das


def main(smk):
    opts = smk.params.patching
    fit_cell_das(
        smk.input.model,
        smk.input.store,
        smk.input.mask,
        smk.input.prompts,
        list(smk.params.languages),
        smk.input.templates,
        smk.params.runtime["template"],
        site=smk.wildcards.site,
        layer=int(smk.wildcards.layer),
        k=int(smk.wildcards.k),
        target_lang=smk.wildcards.lang,
        n_donors=opts["n_donors"],
        steps=opts["das"]["steps"],
        lr=opts["das"]["lr"],
        batch_size=smk.params.batch_size,
        max_new_tokens=smk.params.max_new_tokens,
        out_h5=smk.output.basis,
        threads=smk.threads,
    )


snakemake_main(snakemake, main)  # noqa: F821
