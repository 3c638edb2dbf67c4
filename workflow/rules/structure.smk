# Weight-only structural analyses: results/{model}/structure/ and their figures.


rule weight_families:
    """Seed 002: raw vs Procrustes-aligned cosine of adjacent layers' weight families."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        table=report_item(
            "results/{model}/structure/families.tsv",
            "structure",
            "families",
            "families",
            "weight families, adjacent pairs",
        ),
        table_md="results/{model}/structure/families.md",
        by_phase=report_item(
            "results/{model}/structure/families_by_phase.tsv",
            "structure",
            "families",
            "families",
            "weight families by phase",
        ),
        by_phase_md="results/{model}/structure/families_by_phase.md",
        verdict=report_item(
            "results/{model}/structure/families_verdict.md",
            "structure",
            "families",
            "families",
            "weight families verdict",
        ),
        verdict_tsv=report_item(
            "results/{model}/structure/families_verdict.tsv",
            "structure",
            "families",
            "families",
            "weight families against their null",
        ),
        null_json="results/{model}/structure/{model}-null.json",
        aligned_json="results/{model}/structure/{model}-aligned.json",
        fig=report_figure(
            "results/{model}/figures/families_by_phase",
            "structure",
            "families",
            "families",
            "weight families by phase (figure)",
        ),
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
        cos=report_item(
            "results/{model}/structure/qk_operator_cos.tsv",
            "structure",
            "qk",
            "qk",
            "QK operator cosines",
        ),
        anchor=report_item(
            "results/{model}/structure/qk_anchor.tsv",
            "structure",
            "qk",
            "qk",
            "QK operators vs anchor",
        ),
        anchor_md="results/{model}/structure/qk_anchor.md",
        signs=report_item(
            "results/{model}/structure/qk_sign_agreement.tsv",
            "structure",
            "qk",
            "qk",
            "QK curvature-sign agreement",
        ),
        signs_md="results/{model}/structure/qk_sign_agreement.md",
        verdict=report_item(
            "results/{model}/structure/qk_verdict.md",
            "structure",
            "qk",
            "qk",
            "QK verdict",
        ),
        verdict_tsv=report_item(
            "results/{model}/structure/qk_verdict.tsv",
            "structure",
            "qk",
            "qk",
            "QK verdict table",
        ),
        grams="results/{model}/structure/{model}-grams.json",
        eigdirs="results/{model}/structure/{model}-grams-eigdirs.pt",
        fig=report_figure(
            "results/{model}/figures/qk_cos_heatmap",
            "structure",
            "qk",
            "qk",
            "QK operator cosines (figure)",
        ),
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
        heads=report_item(
            "results/{model}/structure/effective_rank_heads.tsv",
            "structure",
            "effective_rank",
            "effective_rank",
            "effective rank per head",
        ),
        erank=report_table(
            "results/{model}/structure/effective_rank",
            "structure",
            "effective_rank",
            "effective_rank",
            "effective rank per layer",
        ),
        summary=report_table(
            "results/{model}/structure/effective_rank_summary",
            "structure",
            "effective_rank",
            "effective_rank",
            "effective rank depth trends",
        ),
        grassmann="results/{model}/structure/grassmann.h5",
        adjacent=report_table(
            "results/{model}/structure/grassmann_adjacent",
            "structure",
            "grassmann",
            "grassmann",
            "adjacent-layer similarity",
        ),
        ffn=report_table(
            "results/{model}/structure/ffn_alignment",
            "structure",
            "ffn_alignment",
            "ffn",
            "FFN alignment",
        ),
        phases=report_table(
            "results/{model}/structure/phases",
            "structure",
            "phases",
            "phases",
            "phases",
        ),
        bottleneck=report_item(
            "results/{model}/structure/bottleneck.tsv",
            "structure",
            "phases",
            "phases",
            "predicted bottleneck",
        ),
        layer_scores=report_table(
            "results/{model}/structure/layer_scores",
            "structure",
            "layer_scores",
            "layer_scores",
            "weight-only scores per layer",
        ),
        fig_erank=report_figure(
            "results/{model}/figures/effective_rank",
            "structure",
            "effective_rank",
            "effective_rank",
            "effective rank (figure)",
        ),
        fig_grassmann=report_figure(
            "results/{model}/figures/grassmann_heatmap",
            "structure",
            "grassmann",
            "grassmann",
            "layer similarity (figure)",
        ),
        fig_ffn=report_figure(
            "results/{model}/figures/ffn_alignment",
            "structure",
            "ffn_alignment",
            "ffn",
            "FFN alignment (figure)",
        ),
        fig_phases=report_figure(
            "results/{model}/figures/phases",
            "structure",
            "phases",
            "phases",
            "phases (figure)",
        ),
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
