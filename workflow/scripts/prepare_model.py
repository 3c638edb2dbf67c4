"""Glue: materialise a model folder (GGUF dequantisation or hub snapshot) (see zhunt.stages.models.run_prepare_model)."""

from zhunt.stages import call
from zhunt.stages.models import run_prepare_model

call(snakemake, run_prepare_model)  # noqa: F821
