"""Glue: train the model organism and write its training report (see zhunt.stages.models.run_train_organism)."""

from zhunt.stages import call
from zhunt.stages.models import run_train_organism

call(snakemake, run_train_organism)  # noqa: F821
