"""Glue: the organism's held-out prompt set in the paired wide format."""

from zhunt.io import snakemake_main
from zhunt.models.organism import make_organism_prompt_table


def main(smk):
    make_organism_prompt_table(smk.output[0], n=smk.params.n, ops=tuple(smk.params.ops))


snakemake_main(snakemake, main)  # noqa: F821
