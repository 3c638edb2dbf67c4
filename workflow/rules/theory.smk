# Seed 003: tests of the theory notes on the activations, and the toy theorem.


rule theory:
    """SNR and the Theorem-2 condition, layer-contribution geometry, NN retrieval and
    alignment depth, Procrustes vs affine cross-lingual maps, cointegration."""
    input:
        store=lambda wc: activations_path(wc.model),
        generations=lambda wc: theory_generations(wc.model),
        model=lambda wc: model_dir(wc.model),
    output:
        snr=report_table(
            "results/{model}/theory/snr",
            "theory",
            "snr",
            "snr",
            "SNR per layer",
        ),
        summary=report_table(
            "results/{model}/theory/theory_summary",
            "theory",
            "theory_summary",
            "snr",
            "theory summary",
        ),
        gram=report_item(
            "results/{model}/theory/contrib_gram.tsv",
            "theory",
            "contrib_gram",
            "gram",
            "layer-contribution Gram",
        ),
        nn=report_table(
            "results/{model}/theory/nn_retrieval",
            "theory",
            "nn_accuracy",
            "nn",
            "NN retrieval",
        ),
        depth=report_table(
            "results/{model}/theory/alignment_depth",
            "theory",
            "nn_accuracy",
            "nn",
            "alignment depth",
        ),
        crossmap=report_table(
            "results/{model}/theory/crossmap",
            "theory",
            "crossmap",
            "crossmap",
            "cross-lingual maps",
        ),
        coint=report_item(
            "results/{model}/theory/cointegration.tsv",
            "theory",
            "cointegration",
            "cointegration",
            "cointegration",
        ),
        fig_snr=report_figure(
            "results/{model}/figures/snr",
            "theory",
            "snr",
            "snr",
            "SNR (figure)",
        ),
        fig_nn=report_figure(
            "results/{model}/figures/nn_accuracy",
            "theory",
            "nn_accuracy",
            "nn",
            "NN retrieval (figure)",
        ),
        fig_gram=report_figure(
            "results/{model}/figures/contrib_gram",
            "theory",
            "contrib_gram",
            "gram",
            "layer-contribution Gram (figure)",
        ),
        fig_crossmap=report_figure(
            "results/{model}/figures/crossmap",
            "theory",
            "crossmap",
            "crossmap",
            "cross-lingual maps (figure)",
        ),
        digit=report_item(
            "results/{model}/theory/digit_confound.tsv",
            "theory",
            "digit_confound",
            "digit_confound",
            "digit confound (NN retrieval)",
        ),
    log:
        "logs/{model}/theory.log",
    benchmark:
        "benchmarks/{model}/theory.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        provenance=lambda wc: provenance(wc.model),
        nn_threshold=config["theory"]["nn_threshold"],
        pca_dim=config["theory"]["pca_dim"],
        coint_components=config["theory"]["coint_components"],
        site=lambda wc: study_site(wc.model),
        layers=lambda wc: phase2_layers(wc.model),
    script:
        "../scripts/theory.py"


rule toy_theorem:
    """Seed 003 Theorem 1: a shared bilingual linear map's singular values vs sqrt(rho)."""
    output:
        table=report_table(
            "results/theory/toy_theorem",
            "theory",
            "toy_theorem",
            "toy",
            "toy theorem",
        ),
        fig=report_figure(
            "results/theory/toy_theorem",
            "theory",
            "toy_theorem",
            "toy",
            "toy theorem (figure)",
        ),
    log:
        "logs/toy_theorem.log",
    benchmark:
        "benchmarks/toy_theorem.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/toy_theorem.py"
