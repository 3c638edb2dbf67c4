# Seed 003: tests of the theory notes on the activations, and the toy theorem.


rule theory:
    """SNR and the Theorem-2 condition, layer-contribution geometry, NN retrieval and
    alignment depth, Procrustes vs affine cross-lingual maps, cointegration."""
    input:
        store=lambda wc: activations_path(wc.model),
        generations="results/{model}/behaviour/records.tsv",
    output:
        snr=multiext("results/{model}/theory/snr", ".tsv", ".md"),
        summary=multiext("results/{model}/theory/theory_summary", ".tsv", ".md"),
        gram="results/{model}/theory/contrib_gram.tsv",
        nn=multiext("results/{model}/theory/nn_retrieval", ".tsv", ".md"),
        depth=multiext("results/{model}/theory/alignment_depth", ".tsv", ".md"),
        crossmap=multiext("results/{model}/theory/crossmap", ".tsv", ".md"),
        coint="results/{model}/theory/cointegration.tsv",
        fig_snr=multiext("results/{model}/figures/snr", ".pdf", ".png"),
        fig_nn=multiext("results/{model}/figures/nn_accuracy", ".pdf", ".png"),
        fig_gram=multiext("results/{model}/figures/contrib_gram", ".pdf", ".png"),
        fig_crossmap=multiext("results/{model}/figures/crossmap", ".pdf", ".png"),
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
        nn_threshold=config["theory"]["nn_threshold"],
        pca_dim=config["theory"]["pca_dim"],
        coint_components=config["theory"]["coint_components"],
    script:
        "../scripts/theory.py"


rule toy_theorem:
    """Seed 003 Theorem 1: a shared bilingual linear map's singular values vs sqrt(rho)."""
    output:
        table=multiext("results/theory/toy_theorem", ".tsv", ".md"),
        fig=multiext("results/theory/toy_theorem", ".pdf", ".png"),
    log:
        "logs/toy_theorem.log",
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    script:
        "../scripts/toy_theorem.py"
