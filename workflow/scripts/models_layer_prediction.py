"""Glue: the cross-model layer-prediction table and figure (see zhunt.stages.layers.run_models_layer_prediction)."""

from zhunt.stages import call
from zhunt.stages.layers import run_models_layer_prediction

call(snakemake, run_models_layer_prediction)  # noqa: F821
