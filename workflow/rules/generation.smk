# Stages that generate text: Phase 0 behaviour and Exp. A activation patching (GPU rules),
# plus Exp. B R(k) and the GARCH test on the per-step states recorded during Phase 0.


rule behaviour:
    """Phase 0: greedy generation for every problem in every language, scored; records the input and
    output of the primary layer at every generated step (steps.tsv: the GARCH input)."""
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
        batch_size=lambda wc: model_batch_size(wc.model),
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
        patching=lambda wc: patching_params(wc.model, "grid"),
        provenance=lambda wc: provenance(wc.model, patch_layers(wc.model)),
        max_new_tokens=lambda wc: study(wc.model)["patching"]["max_new_tokens"]
        or study(wc.model)["generation"]["max_new_tokens"],
        batch_size=lambda wc: model_batch_size(wc.model),
    script:
        "../scripts/patching.py"


rule patching_cell:
    """Exp. A interchange: one cell (site x layer x k x alignment x direction x source), its records."""
    input:
        model=lambda wc: model_dir(wc.model),
        store=lambda wc: activations_path(wc.model),
        mask=lambda wc: mask_files(wc.model, [patching_cell_layer(wc.cell)])[0],
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
        das=lambda wc: patching_das_input(wc.model, wc.cell),
        ms_basis=lambda wc: patching_ms_input(wc.model),
    output:
        records="results/{model}/patching/cells/{cell}.tsv",
    log:
        "logs/{model}/patching/cells/{cell}.log",
    benchmark:
        "benchmarks/{model}/patching/cells/{cell}.tsv"
    wildcard_constraints:
        cell=PATCHING_CELL_RE,
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
        patching=lambda wc: patching_params(wc.model, "cell"),
        max_new_tokens=lambda wc: patching_max_new_tokens(wc.model),
        batch_size=lambda wc: model_batch_size(wc.model),
    script:
        "../scripts/patching_cell.py"


rule patching_das:
    """Exp. A: the learned k-dim DAS subspace of one site x layer x k (train split, aligned pairs)."""
    input:
        model=lambda wc: model_dir(wc.model),
        store=lambda wc: activations_path(wc.model),
        mask=lambda wc: mask_files(wc.model, [int(wc.layer)])[0],
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
    output:
        basis="results/{model}/patching/das/{site}_L{layer}_k{k}_{lang}.h5",
    log:
        "logs/{model}/patching/das/{site}_L{layer}_k{k}_{lang}.log",
    benchmark:
        "benchmarks/{model}/patching/das/{site}_L{layer}_k{k}_{lang}.tsv"
    wildcard_constraints:
        site="input|output",
        k=r"\d+",
        lang="[a-z]{2}",
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
        patching=lambda wc: patching_params(wc.model, "das"),
        batch_size=lambda wc: model_batch_size(wc.model),
        max_new_tokens=lambda wc: patching_max_new_tokens(wc.model),
    script:
        "../scripts/patching_das.py"


rule patching_interchange:
    """Exp. A interchange: gather the cells into subspaces.tsv, the primary verdict and the figure."""
    input:
        cells=lambda wc: patching_cell_files(wc.model),
    output:
        table=report_table(
            "results/{model}/patching/subspaces",
            "patching",
            "patching_interchange",
            "patching_interchange",
            "IIA and NPE per subspace",
        ),
        verdict="results/{model}/patching/interchange_verdict.md",
        fig=report_figure(
            "results/{model}/figures/patching_interchange",
            "patching",
            "patching_interchange",
            "patching_interchange",
            "IIA and NPE (figure)",
        ),
    log:
        "logs/{model}/patching_interchange.log",
    benchmark:
        "benchmarks/{model}/patching_interchange.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        primary=lambda wc: patching_primary(wc.model),
        primary_lam=lambda wc: study(wc.model)["patching"]["ms_ablation"]["primary_lam"],
    script:
        "../scripts/patching_interchange.py"


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
        site=lambda wc: study_site(wc.model),
        provenance=lambda wc: provenance(wc.model, patch_layers(wc.model)[:1]),
    script:
        "../scripts/decomposition.py"


rule garch:
    """Seed 003: GARCH(1,1) on ||delta_l^(t)||^2, the per-step zh-en update difference of the primary layer."""
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
    benchmark:
        "benchmarks/{model}/garch.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/garch.py"
