# Generated prompt sets (the organism's held-out task in the paired wide format).


rule organism_prompts:
    """Held-out organism problems in the same wide TSV format as the hand-written set."""
    output:
        table="results/{model}/prompts/organism.tsv",
    log:
        "logs/{model}/organism_prompts.log",
    benchmark:
        "benchmarks/{model}/organism_prompts.tsv"
    wildcard_constraints:
        model=models_of_kind("organism", "random"),  # random: the organism's tokenizer
    conda:
        "../../envs/zhunt.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        n=lambda wc: config["prompts"]["organism"]["n"],
        ops=lambda wc: organism_ops(wc.model),
    script:
        "../scripts/organism_prompts.py"


rule mgsm_prompts:
    """MGSM (the benchmark's mgsm_<lang>.tsv files at prompts.<name>.path) as a wide table."""
    input:
        lambda wc: mgsm_files(wc.promptset),
    output:
        table="results/prompts/{promptset}.tsv",
    log:
        "logs/mgsm_prompts_{promptset}.log",
    benchmark:
        "benchmarks/mgsm_prompts_{promptset}.tsv"
    wildcard_constraints:
        promptset=mgsm_promptsets(),
    conda:
        "../../envs/zhunt.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        folder=lambda wc: config["prompts"][wc.promptset]["path"],
        languages=lambda wc: config["prompts"][wc.promptset]["languages"],
        limit=lambda wc: config["prompts"][wc.promptset]["limit"],
    script:
        "../scripts/mgsm_prompts.py"
