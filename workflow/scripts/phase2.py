"""Glue: Phase 2 Z-projection metrics (see zhunt.activations.zspace.run_phase2)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.data.numerals import store_numeral_ids
from zhunt.activations.zspace import run_phase2


def main(smk):
    model = smk.wildcards.model
    layers = list(smk.params.layers)
    run_phase2(
        smk.input.store,
        dict(zip(layers, smk.input.masks)),
        model,
        layers,
        list(smk.params.ks),
        kinds=tuple(smk.params.kinds),
        n_random=smk.params.n_random,
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        summary_tsv=smk.output.summary[0],
        summary_md=smk.output.summary[1],
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
        site=smk.params.site,
        site_variants=list(smk.params.site_variants),
        numeral_ids=store_numeral_ids(smk.input.model, smk.input.store),
        digit_tsv=smk.output.digit,
        where={
            "layers": f"models.{model}.study.phase2_layers",
            "ks": f"models.{model}.study.phase2_k",
            "kinds": f"models.{model}.study.mask_kinds",
        },
    )


snakemake_main(snakemake, main)  # noqa: F821
