# Stages that generate text: Phase 0 behaviour and Exp. A activation patching (GPU rules),
# plus Exp. B R(k) and the GARCH test on the per-step states recorded during Phase 0.


rule behaviour:
    """Phase 0: greedy generation for every problem in every language, scored."""
    input:
        model=lambda wc: model_dir(wc.model),
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
        fewshot=config["fewshot"],
    output:
        records=report_item(
            "results/{model}/behaviour/records.tsv",
            "behaviour",
            "behaviour",
            "behaviour",
            "generations, scored",
        ),
        summary=report_table(
            "results/{model}/behaviour/summary",
            "behaviour",
            "behaviour",
            "behaviour",
            "accuracy per language",
        ),
        steps="results/{model}/behaviour/steps.tsv",
        fig=report_figure(
            "results/{model}/figures/behaviour_accuracy",
            "behaviour",
            "behaviour",
            "behaviour",
            "accuracy (figure)",
        ),
    log:
        "logs/{model}/behaviour.log",
    benchmark:
        "benchmarks/{model}/behaviour.tsv"
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
        generation=lambda wc: study(wc.model)["generation"],
        step_layer=lambda wc: resolve_layer(wc.model, study(wc.model)["primary_layer"]),
        batch_size=config["generation"]["batch_size"],
    script:
        "../scripts/behaviour.py"


rule patching:
    """Exp. A: Z / Z-perp / full / random-subspace patching, grid of layer x k x alignment x direction."""
    input:
        model=lambda wc: model_dir(wc.model),
        store=lambda wc: activations_path(wc.model),
        masks=lambda wc: mask_files(wc.model, patch_layers(wc.model)),
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
    output:
        records=report_item(
            "results/{model}/patching/records.tsv",
            "patching",
            "patching",
            "patching",
            "records",
        ),
        metrics=report_table(
            "results/{model}/patching/metrics",
            "patching",
            "patching",
            "patching",
            "metrics per configuration",
        ),
        verdict=report_item(
            "results/{model}/patching/verdict.md",
            "patching",
            "patching",
            "patching",
            "verdict",
        ),
        tables=report(
            directory("results/{model}/patching/tables"),
            patterns=["table_{config}.tsv"],
            caption="../report/patching_table.rst",
            category=REPORT_CATEGORIES["patching"],
            subcategory="{model}",
            labels=report_labels("patching_table", "table {config}"),
        ),
    log:
        "logs/{model}/patching.log",
    benchmark:
        "benchmarks/{model}/patching.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=600,
    params:
        runtime=lambda wc: model_runtime(wc.model),
        languages=lambda wc: promptset_languages(wc.model),
        layers=lambda wc: patch_layers(wc.model),
        ks=lambda wc: study(wc.model)["patch_k"],
        patching=lambda wc: study(wc.model)["patching"],
        provenance=lambda wc: provenance(wc.model, patch_layers(wc.model)),
        max_new_tokens=lambda wc: study(wc.model)["patching"]["max_new_tokens"]
        or study(wc.model)["generation"]["max_new_tokens"],
        batch_size=config["generation"]["batch_size"],
    script:
        "../scripts/patching.py"


rule decomposition:
    """Exp. B: R(k) = |P_Z dh| / |P_Z-perp dh| per layer update, primary layer's Z as basis."""
    input:
        store=lambda wc: activations_path(wc.model),
        mask=lambda wc: mask_files(wc.model, patch_layers(wc.model)[:1])[0],
    output:
        table=report_table(
            "results/{model}/decomposition/R",
            "decomposition",
            "decomposition",
            "decomposition",
            "R(k) per layer",
        ),
        fig=report_figure(
            "results/{model}/figures/decomposition_R",
            "decomposition",
            "decomposition",
            "decomposition",
            "R(k) vs layer (figure)",
        ),
    log:
        "logs/{model}/decomposition.log",
    benchmark:
        "benchmarks/{model}/decomposition.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        ks=lambda wc: study(wc.model)["patch_k"],
        n_random=config["zspace"]["n_random"],
        provenance=lambda wc: provenance(wc.model, patch_layers(wc.model)[:1]),
    script:
        "../scripts/decomposition.py"


rule garch:
    """Seed 003: GARCH(1,1) on per-step cross-lingual update norms at the primary layer."""
    input:
        steps="results/{model}/behaviour/steps.tsv",
    output:
        table=report_table(
            "results/{model}/theory/garch",
            "theory",
            "garch",
            "garch",
            "GARCH(1,1) per problem",
        ),
        fig=report_figure(
            "results/{model}/figures/garch_beta",
            "theory",
            "garch",
            "garch",
            "GARCH beta (figure)",
        ),
    log:
        "logs/{model}/garch.log",
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    script:
        "../scripts/garch.py"
