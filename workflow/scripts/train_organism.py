"""Glue: train the model organism (see zhunt.models.organism)."""

from zhunt.io import snakemake_main
from zhunt.stages.pipeline import train_organism_stage


def main(smk):
    train_organism_stage(
        model_name=smk.wildcards.model,
        train=dict(smk.params.train),
        out_dir=smk.output.model,
        loss_tsv=smk.output.loss,
        report_md=smk.output.report,
        figure_png=smk.output.figure,
        threads=smk.threads,
    )


snakemake_main(snakemake, main)  # noqa: F821
