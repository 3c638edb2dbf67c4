# Weight-only structural analyses: results/{model}/structure/ and their figures.


rule weight_families:
    """Seed 002: raw vs Procrustes-aligned cosine of adjacent layers' weight families."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        table="results/{model}/structure/families.tsv",
        table_md="results/{model}/structure/families.md",
        by_phase="results/{model}/structure/families_by_phase.tsv",
        by_phase_md="results/{model}/structure/families_by_phase.md",
        verdict="results/{model}/structure/families_verdict.md",
        null_json="results/{model}/structure/{model}-null.json",
        aligned_json="results/{model}/structure/{model}-aligned.json",
        fig=multiext("results/{model}/figures/families_by_phase", ".pdf", ".png"),
    log:
        "logs/{model}/weight_families.log",
    benchmark:
        "benchmarks/{model}/weight_families.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        side=config["structure"]["families_side"],
    script:
        "../scripts/weight_families.py"


rule qk_operators:
    """Seed 004: QK operators g = W_Q^T W_K across layers (grams, signed spectra, verdict)."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        cos="results/{model}/structure/qk_operator_cos.tsv",
        anchor="results/{model}/structure/qk_anchor.tsv",
        anchor_md="results/{model}/structure/qk_anchor.md",
        signs="results/{model}/structure/qk_sign_agreement.tsv",
        signs_md="results/{model}/structure/qk_sign_agreement.md",
        verdict="results/{model}/structure/qk_verdict.md",
        grams="results/{model}/structure/{model}-grams.json",
        eigdirs="results/{model}/structure/{model}-grams-eigdirs.pt",
        fig=multiext("results/{model}/figures/qk_cos_heatmap", ".pdf", ".png"),
    log:
        "logs/{model}/qk_operators.log",
    benchmark:
        "benchmarks/{model}/qk_operators.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        anchor=config["structure"]["qk_anchor"],
        factors=config["structure"]["qk_factors"],
    script:
        "../scripts/qk_operators.py"


checkpoint structure:
    """Seed 1.py/2.py: effective ranks, subspace overlap, FFN alignment, phases and the
    bottleneck predicted from weights alone (a checkpoint: `layer: auto` reads it)."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        heads="results/{model}/structure/effective_rank_heads.tsv",
        erank=multiext("results/{model}/structure/effective_rank", ".tsv", ".md"),
        summary=multiext(
            "results/{model}/structure/effective_rank_summary", ".tsv", ".md"
        ),
        grassmann="results/{model}/structure/grassmann.h5",
        adjacent=multiext("results/{model}/structure/grassmann_adjacent", ".tsv", ".md"),
        ffn=multiext("results/{model}/structure/ffn_alignment", ".tsv", ".md"),
        phases=multiext("results/{model}/structure/phases", ".tsv", ".md"),
        bottleneck="results/{model}/structure/bottleneck.tsv",
        fig_erank=multiext("results/{model}/figures/effective_rank", ".pdf", ".png"),
        fig_grassmann=multiext(
            "results/{model}/figures/grassmann_heatmap", ".pdf", ".png"
        ),
        fig_ffn=multiext("results/{model}/figures/ffn_alignment", ".pdf", ".png"),
        fig_phases=multiext("results/{model}/figures/phases", ".pdf", ".png"),
    log:
        "logs/{model}/structure.log",
    benchmark:
        "benchmarks/{model}/structure.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        k=config["structure"]["k"],
    script:
        "../scripts/structure.py"
