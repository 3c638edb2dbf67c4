# Activation-space analyses of Z: Phase 2 projections and the data-driven baseline.


rule phase2:
    """Seed 001 Phase 2: ratio_Z vs ratio_Z-perp, language/problem energy in Z vs random subspaces,
    at every site, with the digit-confound references (embedding output, numeral-free pooling).
    """
    input:
        store=lambda wc: activations_path(wc.model),
        masks=lambda wc: mask_files(wc.model, phase2_layers(wc.model)),
        model=lambda wc: model_dir(wc.model),
    output:
        table=report_table(
            "results/{model}/zspace/phase2",
            "zspace",
            "phase2",
            "phase2",
            "Phase 2 per configuration",
        ),
        summary=report_table(
            "results/{model}/zspace/phase2_summary",
            "zspace",
            "phase2",
            "phase2",
            "Phase 2 summary",
        ),
        fig=report_figure(
            "results/{model}/figures/phase2_heatmap",
            "zspace",
            "phase2",
            "phase2",
            "Phase 2 ratios (figure)",
        ),
        digit=report_item(
            "results/{model}/zspace/digit_confound.tsv",
            "zspace",
            "digit_confound",
            "digit_confound",
            "digit confound (Phase 2)",
        ),
    log:
        "logs/{model}/phase2.log",
    benchmark:
        "benchmarks/{model}/phase2.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        provenance=lambda wc: provenance(wc.model, phase2_layers(wc.model)),
        layers=lambda wc: phase2_layers(wc.model),
        ks=lambda wc: study(wc.model)["phase2_k"],
        kinds=lambda wc: study(wc.model)["mask_kinds"],
        n_random=config["zspace"]["n_random"],
        site=lambda wc: study_site(wc.model),
        site_variants=lambda wc: study_site_variants(wc.model),
    script:
        "../scripts/phase2.py"


rule datadriven_z:
    """arXiv 2505.15257 language subspace M_s from per-language means, next to weight-Z."""
    input:
        store=lambda wc: activations_path(wc.model),
        masks=lambda wc: mask_files(wc.model, phase2_layers(wc.model)),
    output:
        table=report_table(
            "results/{model}/zspace/datadriven",
            "zspace",
            "datadriven",
            "datadriven",
            "data-driven language subspace",
        ),
        fig=report_figure(
            "results/{model}/figures/datadriven_angles",
            "zspace",
            "datadriven",
            "datadriven",
            "data-driven subspace vs Z (figure)",
        ),
        basis="results/{model}/zspace/ms_basis.h5",
    log:
        "logs/{model}/datadriven_z.log",
    benchmark:
        "benchmarks/{model}/datadriven_z.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        provenance=lambda wc: provenance(wc.model, phase2_layers(wc.model)),
        layers=lambda wc: phase2_layers(wc.model),
        ks=lambda wc: study(wc.model)["phase2_k"],
        n_random=config["zspace"]["n_random"],
        site=lambda wc: study_site(wc.model),
        site_variants=lambda wc: study_site_variants(wc.model),
    script:
        "../scripts/datadriven_z.py"
