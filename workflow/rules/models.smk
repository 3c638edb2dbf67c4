# Model folders under resources/models/{model}: trained (organism) or converted.


rule train_organism:
    """Train the bilingual arithmetic model organism (Qwen2 architecture)."""
    output:
        model=directory("resources/models/{model}"),
        loss=report_item(
            "results/{model}/organism/training_loss.tsv",
            "organism",
            "training",
            "training",
            "training loss",
        ),
        accuracy="results/{model}/organism/training_accuracy.tsv",
        report=report_item(
            "results/{model}/organism/training_report.md",
            "organism",
            "training",
            "training",
            "training report",
        ),
        figure=report_item(
            "results/{model}/organism/training_loss.png",
            "organism",
            "training",
            "training",
            "training loss (figure)",
        ),
    log:
        "logs/{model}/train_organism.log",
    benchmark:
        "benchmarks/{model}/train_organism.tsv"
    wildcard_constraints:
        model=models_of_kind("organism"),
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        train=lambda wc: organism_train(wc.model),
    script:
        "../scripts/train_organism.py"


rule prepare_model:
    """Materialise a HF folder: dequantise a GGUF (checksum verified) or snapshot a hub id."""
    output:
        model=directory("resources/models/{model}"),
    log:
        "logs/{model}/prepare_model.log",
    benchmark:
        "benchmarks/{model}/prepare_model.tsv"
    wildcard_constraints:
        model=models_of_kind("gguf_package", "gguf", "folder", "hub", "random"),
    conda:
        "../../envs/zhunt.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        spec=lambda wc: model_spec(wc.model),
    script:
        "../scripts/prepare_model.py"
