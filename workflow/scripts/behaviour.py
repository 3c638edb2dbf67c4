"""Glue: Phase 0 behaviour (see zhunt.experiments.behaviour.run_behaviour)."""

from pathlib import Path

from zhunt.experiments.behaviour import run_behaviour
from zhunt.io import snakemake_main


def main(smk):
    run_behaviour(
        smk.input.model,
        smk.wildcards.model,
        smk.input.prompts,
        list(smk.params.languages),
        smk.input.templates,
        smk.params.runtime["template"],
        smk.input.fewshot,
        n_shots=smk.params.generation["n_shots"],
        max_new_tokens=smk.params.generation["max_new_tokens"],
        batch_size=smk.params.batch_size,
        out_records=smk.output.records,
        out_summary_tsv=smk.output.summary[0],
        out_summary_md=smk.output.summary[1],
        fig_stem=Path(smk.output.fig[0]).with_suffix(""),
        out_steps=smk.output.steps,
        step_layer=smk.params.step_layer,
        threads=smk.threads,
    )


snakemake_main(snakemake, main)  # noqa: F821
