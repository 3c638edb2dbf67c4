# Per-layer hidden states of a prompt set: results/{model}/activations/{promptset}.h5


rule extract_activations:
    """Batched forward passes; every decoder layer's raw output streamed to HDF5."""
    input:
        model=lambda wc: model_dir(wc.model),
        prompts=lambda wc: promptset_path(wc.model),
        templates=config["templates"],
    output:
        "results/{model}/activations/{promptset}.h5",
    log:
        "logs/{model}/extract_activations_{promptset}.log",
    benchmark:
        "benchmarks/{model}/extract_activations_{promptset}.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        runtime=lambda wc: model_runtime(wc.model),
        languages=lambda wc: config["prompts"][wc.promptset]["languages"],
        batch_size=config["extraction"]["batch_size"],
        dtype=config["extraction"]["dtype"],
    script:
        "../scripts/extract_activations.py"
