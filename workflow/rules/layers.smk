# Do the weights predict the layer where the data finds Z? results/{model}/layers/ (zhunt.experiments.layerpred)


rule layer_sweep:
    """Phase 2 ratio_Z / ratio_Z-perp and language energy of each layer's own Z, at every layer
    (the multi-head Z of every layer computed in one pass over the weights)."""
    input:
        store=lambda wc: activations_path(wc.model),
        model=lambda wc: model_dir(wc.model),
    output:
        table=report_table(
            "results/{model}/layers/sweep",
            "layers",
            "layer_sweep",
            "layer_sweep",
            "Phase 2 at every layer",
        ),
    log:
        "logs/{model}/layer_sweep.log",
    benchmark:
        "benchmarks/{model}/layer_sweep.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        k=lambda wc: primary_k(wc.model),
        site=lambda wc: study(wc.model)["site"],
        n_random=config["zspace"]["n_random"],
    script:
        "../scripts/layer_sweep.py"


rule layer_causal:
    """Exp. A's Z interchange at every layer: each layer's own Z, donor design, mean source,
    no training (IIA and NPE of the primary direction, one teacher-forced pass per layer).
    """
    input:
        model=lambda wc: model_dir(wc.model),
        store=lambda wc: activations_path(wc.model),
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
    output:
        table=report_table(
            "results/{model}/layers/causal",
            "layers",
            "layer_causal",
            "layer_causal",
            "Exp. A at every layer",
        ),
    log:
        "logs/{model}/layer_causal.log",
    benchmark:
        "benchmarks/{model}/layer_causal.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        runtime=lambda wc: model_runtime(wc.model),
        languages=lambda wc: promptset_languages(wc.model),
        k=lambda wc: primary_k(wc.model),
        site=lambda wc: study(wc.model)["site"],
        direction=lambda wc: study(wc.model)["patching"]["primary"]["direction"],
        n_donors=lambda wc: study(wc.model)["patching"]["n_donors"],
        max_new_tokens=lambda wc: patching_max_new_tokens(wc.model),
        batch_size=lambda wc: model_batch_size(wc.model),
    script:
        "../scripts/layer_causal.py"


rule layer_das:
    """DAS next to Z at the DAS sweep's layers (every study.layer_das.every-th layer, the predicted
    bottleneck and the configured layers): a k-dim subspace learned on the train pairs of the causal
    sweep's design, both scored on the held-out pairs."""
    input:
        model=lambda wc: model_dir(wc.model),
        store=lambda wc: activations_path(wc.model),
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
        bottleneck=lambda wc: bottleneck_file(wc.model),
    output:
        table=report_table(
            "results/{model}/layers/das",
            "layers",
            "layer_das",
            "layer_das",
            "DAS and Z by layer",
        ),
    log:
        "logs/{model}/layer_das.log",
    benchmark:
        "benchmarks/{model}/layer_das.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=180,
    params:
        runtime=lambda wc: model_runtime(wc.model),
        languages=lambda wc: promptset_languages(wc.model),
        k=lambda wc: primary_k(wc.model),
        site=lambda wc: study(wc.model)["site"],
        direction=lambda wc: study(wc.model)["patching"]["primary"]["direction"],
        n_donors=lambda wc: study(wc.model)["patching"]["n_donors"],
        max_new_tokens=lambda wc: patching_max_new_tokens(wc.model),
        batch_size=lambda wc: model_batch_size(wc.model),
        every=lambda wc: study(wc.model)["layer_das"]["every"],
        include=lambda wc: layer_das_include(wc.model),
        das=lambda wc: layer_das_options(wc.model),
    script:
        "../scripts/layer_das.py"


rule layer_comparison:
    """Predicted vs data-best layer, shift-permutation correlations, verdict and the depth figure."""
    input:
        scores="results/{model}/structure/layer_scores.tsv",
        sweep="results/{model}/layers/sweep.tsv",
        causal_sweep="results/{model}/layers/causal.tsv",
        das_sweep=lambda wc: layer_das_input(wc.model),
        causal=lambda wc: layer_patching_das_input(wc.model),
    output:
        comparison=report_table(
            "results/{model}/layers/comparison",
            "layers",
            "layer_comparison",
            "layer_comparison",
            "predicted vs data-best layer",
        ),
        correlations=report_table(
            "results/{model}/layers/correlations",
            "layers",
            "layer_comparison",
            "layer_comparison",
            "weight x data score correlations",
        ),
        verdict=report_item(
            "results/{model}/layers/verdict.md",
            "layers",
            "layer_comparison",
            "layer_comparison",
            "layer prediction verdict",
        ),
        fig=report_figure(
            "results/{model}/figures/layer_profiles",
            "layers",
            "layer_profiles",
            "layer_comparison",
            "weights and data by depth (figure)",
        ),
    log:
        "logs/{model}/layer_comparison.log",
    benchmark:
        "benchmarks/{model}/layer_comparison.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        site=lambda wc: study(wc.model)["site"],
    script:
        "../scripts/layer_comparison.py"


rule models_layer_prediction:
    """Predicted vs data-best layer as a fraction of depth, every analysed model and the seed's row."""
    input:
        comparisons=lambda wc: expand(
            "results/{model}/layers/comparison.tsv", model=config["analyze"]
        ),
    output:
        table=report_table(
            "results/summary/layer_prediction",
            "layers",
            "layer_models",
            "layer_models",
            "layer prediction, all models",
        ),
        fig=report_figure(
            "results/summary/figures/layer_prediction",
            "layers",
            "layer_models",
            "layer_models",
            "layer prediction, all models (figure)",
        ),
    log:
        "logs/models_layer_prediction.log",
    benchmark:
        "benchmarks/models_layer_prediction.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/models_layer_prediction.py"
