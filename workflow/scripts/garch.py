"""Glue: GARCH(1,1) on per-step delta norms (see zhunt.activations.theory.run_garch)."""

from pathlib import Path

from zhunt.io import snakemake_main
from zhunt.activations.theory import run_garch


def main(smk):
    run_garch(
        smk.input.steps,
        smk.output.table[0],
        smk.output.table[1],
        Path(smk.output.fig[0]).with_suffix(""),
    )


snakemake_main(snakemake, main)  # noqa: F821
