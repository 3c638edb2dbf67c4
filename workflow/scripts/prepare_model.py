"""Glue: materialise a model folder (GGUF dequantisation or hub snapshot)."""

from zhunt.io import snakemake_main
from zhunt.models import prepare_model_folder


def main(smk):
    prepare_model_folder(smk.wildcards.model, dict(smk.params.spec), smk.output[0])


snakemake_main(snakemake, main)  # noqa: F821
