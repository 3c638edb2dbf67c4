# zhunt: hunt a language-agnostic reasoning subspace Z inside language models.
# Declarations only; helpers live in workflow/rules/common.smk, science in src/zhunt.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/structure.smk"
include: "workflow/rules/zspace.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/generation.smk"
include: "workflow/rules/ard.smk"
include: "workflow/rules/layers.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,
