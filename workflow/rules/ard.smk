# Exp. C ARD-MMD lengthscales and Exp. D cross-language bridge.


rule ard_layer:
    """ARD-MMD lengthscales of one layer: lambda x init x objective x basis grid."""
    input:
        store=lambda wc: activations_path(wc.model),
        mask=lambda wc: mask_files(wc.model, [int(wc.layer)])[0],
    output:
        h5="results/{model}/ard/L{layer}.h5",
        tsv=report_item(
            "results/{model}/ard/L{layer}.tsv",
            "ard",
            "ard_layer",
            "ard_layer",
            "lengthscales L{layer}",
            layer="{layer}",
        ),
    log:
        "logs/{model}/ard_L{layer}.log",
    benchmark:
        "benchmarks/{model}/ard_L{layer}.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        ard=lambda wc: study(wc.model)["ard"],
        k_warm=lambda wc: max(study(wc.model)["patch_k"]),
        site=lambda wc: study_site(wc.model),
        site_variants=lambda wc: study_site_variants(wc.model),
        provenance=lambda wc: provenance(wc.model, [int(wc.layer)]),
    script:
        "../scripts/ard_layer.py"


rule ard_summary:
    """|Z| vs layer, lengthscale spectrum and bimodality, SVD-ARD overlap, the seed objective's collapse."""
    input:
        h5=lambda wc: expand(
            "results/{{model}}/ard/L{layer}.h5", layer=ard_layers(wc.model)
        ),
        tsv=lambda wc: expand(
            "results/{{model}}/ard/L{layer}.tsv", layer=ard_layers(wc.model)
        ),
        heldout="results/{model}/ard/heldout.tsv",
    output:
        table=report_table(
            "results/{model}/ard/summary",
            "ard",
            "ard_summary",
            "ard_size",
            "ARD summary",
        ),
        headline=report_item(
            "results/{model}/ard/headline.tsv",
            "ard",
            "ard_headline",
            "ard_headline",
            "headline size of Z",
        ),
        fig_size=report_figure(
            "results/{model}/figures/ard_z_size",
            "ard",
            "ard_z_size",
            "ard_size",
            "size of Z vs layer (figure)",
        ),
        fig_spectrum=report_figure(
            "results/{model}/figures/ard_spectrum",
            "ard",
            "ard_spectrum",
            "ard_spectrum",
            "lengthscale spectrum (figure)",
        ),
        fig_traj=report_figure(
            "results/{model}/figures/ard_trajectories",
            "ard",
            "ard_trajectories",
            "ard_collapse",
            "lengthscale trajectories (figure)",
        ),
    log:
        "logs/{model}/ard_summary.log",
    benchmark:
        "benchmarks/{model}/ard_summary.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        primary=lambda wc: ard_primary(wc.model),
        site=lambda wc: study_site(wc.model),
        provenance=lambda wc: provenance(wc.model, ard_layers(wc.model)),
    script:
        "../scripts/ard_summary.py"


rule ard_heldout:
    """Liu et al. (2020) practice: fit lengthscales on half the problems, permutation MMD test on the rest."""
    input:
        store=lambda wc: activations_path(wc.model),
        mask=lambda wc: mask_files(wc.model, [ard_primary(wc.model)])[0],
    output:
        tsv=report_item(
            "results/{model}/ard/heldout.tsv",
            "ard",
            "ard_heldout",
            "ard_heldout",
            "held-out MMD tests",
        ),
    log:
        "logs/{model}/ard_heldout.log",
    benchmark:
        "benchmarks/{model}/ard_heldout.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        layer=lambda wc: ard_primary(wc.model),
        provenance=lambda wc: provenance(wc.model, [ard_primary(wc.model)]),
        ard=lambda wc: study(wc.model)["ard"],
        k_warm=lambda wc: max(study(wc.model)["patch_k"]),
        n_permutations=config["ard_test"]["n_permutations"],
        site=lambda wc: study_site(wc.model),
    script:
        "../scripts/ard_heldout.py"


rule bridge:
    """Exp. D: linear maps between languages inside Z (lstsq, ridge, Procrustes, affine; LOO R^2, null)."""
    input:
        store=lambda wc: activations_path(wc.model),
        masks=lambda wc: mask_files(wc.model, patch_layers(wc.model)),
    output:
        table=report_table(
            "results/{model}/bridge/bridge",
            "bridge",
            "bridge",
            "bridge",
            "bridge fits",
        ),
        extra=[
            report_item(
                "results/{model}/bridge/bridge.spectra.tsv",
                "bridge",
                "bridge_spectra",
                "bridge_spectra",
                "singular values of the maps",
            ),
            report_item(
                "results/{model}/bridge/bridge.null.tsv",
                "bridge",
                "bridge_null",
                "bridge",
                "permutation null",
            ),
        ],
        fig_spectra=report_figure(
            "results/{model}/figures/bridge_spectra",
            "bridge",
            "bridge_spectra",
            "bridge_spectra",
            "singular values (figure)",
        ),
        fig_loo=report_figure(
            "results/{model}/figures/bridge_loo_r2",
            "bridge",
            "bridge",
            "bridge",
            "leave-one-out R² (figure)",
        ),
        fig_null=report_figure(
            "results/{model}/figures/bridge_null",
            "bridge",
            "bridge_null",
            "bridge",
            "permutation null (figure)",
        ),
    log:
        "logs/{model}/bridge.log",
    benchmark:
        "benchmarks/{model}/bridge.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        layers=lambda wc: patch_layers(wc.model),
        ks=lambda wc: study(wc.model)["patch_k"],
        n_permutations=config["ard_test"]["n_permutations"],
        site=lambda wc: study_site(wc.model),
        site_variants=lambda wc: study_site_variants(wc.model),
        provenance=lambda wc: provenance(wc.model, patch_layers(wc.model)),
    script:
        "../scripts/bridge.py"
