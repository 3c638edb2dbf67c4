"""Glue: an MGSM prompt set (the benchmark's own files) as a wide prompt table."""

from zhunt.io import snakemake_main
from zhunt.stages.pipeline import mgsm_prompt_set


def main(smk):
    mgsm_prompt_set(smk.params.folder, list(smk.params.languages), smk.params.limit, smk.output[0])


snakemake_main(snakemake, main)  # noqa: F821
