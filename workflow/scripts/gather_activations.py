"""Glue: join the shard stores of a sharded extraction (see zhunt.data.store.gather_shards)."""

from zhunt.io import snakemake_main
from zhunt.stages.pipeline import gather_activation_shards


def main(smk):
    gather_activation_shards(list(smk.input), smk.output[0])


snakemake_main(snakemake, main)  # noqa: F821
