# Per-layer hidden states of a prompt set: results/{model}/activations/{promptset}.h5
# (extraction.shards > 1: N shard jobs + a gather job that joins them with HDF5 virtual datasets;
# the wildcard constraints let exactly one of extract_activations / gather_activations apply)


rule extract_activations:
    """Batched forward passes; every decoder layer's raw output streamed to HDF5."""
    input:
        model=lambda wc: model_dir(wc.model),
        prompts=lambda wc: promptset_path(wc.model, wc.promptset),
        templates=config["templates"],
    output:
        store="results/{model}/activations/{promptset}.h5",
    log:
        "logs/{model}/extract_activations_{promptset}.log",
    benchmark:
        "benchmarks/{model}/extract_activations_{promptset}.tsv"
    wildcard_constraints:
        promptset=unsharded_promptsets(),
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
        batch_size=lambda wc: model_batch_size(wc.model, "extraction"),
        dtype=config["extraction"]["dtype"],
        layers=config["extraction"]["layers"],
        study_layers=lambda wc: store_study_layers(wc.model),
        shard=None,
    script:
        "../scripts/extract_activations.py"


rule extract_activations_shard:
    """One shard of the length-sorted batch plan (every N-th batch), as a complete small store."""
    input:
        model=lambda wc: model_dir(wc.model),
        prompts=lambda wc: promptset_path(wc.model, wc.promptset),
        templates=config["templates"],
    output:
        store="results/{model}/activations/{promptset}.shard{shard}of{n}.h5",
    log:
        "logs/{model}/extract_activations_{promptset}.shard{shard}of{n}.log",
    benchmark:
        "benchmarks/{model}/extract_activations_{promptset}.shard{shard}of{n}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        n=r"\d+",
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
        batch_size=lambda wc: model_batch_size(wc.model, "extraction"),
        dtype=config["extraction"]["dtype"],
        layers=config["extraction"]["layers"],
        study_layers=lambda wc: store_study_layers(wc.model),
        shard=lambda wc: [int(wc.shard), int(wc.n)],
    script:
        "../scripts/extract_activations.py"


rule gather_activations:
    """Join the shards into one store (virtual datasets; no row is copied)."""
    input:
        shards=shard_files,
    output:
        store="results/{model}/activations/{promptset}.h5",
    log:
        "logs/{model}/gather_activations_{promptset}.log",
    benchmark:
        "benchmarks/{model}/gather_activations_{promptset}.tsv"
    wildcard_constraints:
        promptset=sharded_promptsets(),
    conda:
        "../../envs/zhunt.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/gather_activations.py"
