"""Glue: data-driven language subspace vs weight-derived Z (see zhunt.activations.zspace.run_datadriven)."""

from pathlib import Path

from zhunt.experiments.ablation import write_ms_basis
from zhunt.io import snakemake_main
from zhunt.activations.zspace import run_datadriven


def main(smk):
    model = smk.wildcards.model
    layers = list(smk.params.layers)
    run_datadriven(
        smk.input.store,
        dict(zip(layers, smk.input.masks)),
        model,
        layers,
        list(smk.params.ks),
        n_random=smk.params.n_random,
        out_tsv=smk.output.table[0],
        out_md=smk.output.table[1],
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
        site=smk.params.site,
        site_variants=list(smk.params.site_variants),
        where={
            "layers": f"models.{model}.study.phase2_layers",
            "ks": f"models.{model}.study.phase2_k",
        },
    )
    write_ms_basis(smk.output.basis, smk.input.store, model)  # every layer, both sites


snakemake_main(snakemake, main)  # noqa: F821
