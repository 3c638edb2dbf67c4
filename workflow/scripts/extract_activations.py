"""Glue: per-layer hidden states of one prompt set (see zhunt.data.extraction)."""

from zhunt.io import snakemake_main
from zhunt.stages.pipeline import extract_prompt_set


def main(smk):
    extract_prompt_set(
        model_dir=smk.input.model,
        model_name=smk.wildcards.model,
        spec=dict(smk.params.runtime),
        prompts_path=smk.input.prompts,
        languages=list(smk.params.languages),
        templates_path=smk.input.templates,
        out_path=smk.output[0],
        batch_size=smk.params.batch_size,
        dtype=smk.params.dtype,
        threads=smk.threads,
        layers=smk.params.layers,
        study_layers=list(smk.params.study_layers),
        shard=smk.params.shard,
    )


snakemake_main(snakemake, main)  # noqa: F821
