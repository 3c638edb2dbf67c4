"""Glue: Z-masks of one layer of one model (see zhunt.weights.masks)."""

from zhunt.io import snakemake_main
from zhunt.stages.pipeline import build_layer_masks


def main(smk):
    build_layer_masks(
        model_dir=smk.input.model,
        model_name=smk.wildcards.model,
        layer=int(smk.wildcards.layer),
        ks=smk.params.ks,
        kinds=smk.params.kinds,
        out_path=smk.output[0],
    )


snakemake_main(snakemake, main)  # noqa: F821
