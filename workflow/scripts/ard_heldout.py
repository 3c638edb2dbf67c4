"""Glue: held-out permutation MMD test with learned lengthscales (see zhunt.activations.ard.run_heldout_test)."""

from zhunt.activations.ard import run_heldout_test
from zhunt.io import snakemake_main


def main(smk):
    ard = smk.params.ard
    lambdas = sorted(ard["lambdas"])
    run_heldout_test(
        smk.input.store,
        smk.input.mask,
        smk.params.layer,
        lambdas[len(lambdas) // 2],  # the middle of the lambda grid
        out_tsv=smk.output[0],
        model_name=smk.wildcards.model,
        k_warm=smk.params.k_warm,
        lr=ard["lr"],
        min_steps=ard["min_steps"],
        max_steps=ard["max_steps"],
        n_permutations=smk.params.n_permutations,
        site=smk.params.site,
    )


snakemake_main(snakemake, main)  # noqa: F821
