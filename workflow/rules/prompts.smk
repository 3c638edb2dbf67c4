# Generated prompt sets (the organism's held-out task in the paired wide format).


rule organism_prompts:
    """Held-out organism problems in the same wide TSV format as the hand-written set."""
    output:
        "results/{model}/prompts/organism.tsv",
    log:
        "logs/{model}/organism_prompts.log",
    wildcard_constraints:
        model=models_of_kind("organism", "random"),  # random: the organism's tokenizer
    conda:
        "../../envs/zhunt.yaml"
    params:
        n=lambda wc: config["prompts"]["organism"].get("n", 60),
        ops=lambda wc: model_spec(wc.model)["source"]
        .get("train", {})
        .get("ops", ["plus", "minus"]),
    script:
        "../scripts/organism_prompts.py"


rule mgsm_prompts:
    """MGSM (the benchmark's mgsm_<lang>.tsv files at prompts.<name>.path) as a wide table."""
    input:
        lambda wc: mgsm_files(wc.promptset),
    output:
        "results/prompts/{promptset}.tsv",
    log:
        "logs/mgsm_prompts_{promptset}.log",
    benchmark:
        "benchmarks/mgsm_prompts_{promptset}.tsv"
    wildcard_constraints:
        promptset=mgsm_promptsets(),
    conda:
        "../../envs/zhunt.yaml"
    params:
        folder=lambda wc: config["prompts"][wc.promptset]["path"],
        languages=lambda wc: config["prompts"][wc.promptset]["languages"],
        limit=lambda wc: config["prompts"][wc.promptset].get("limit"),
    script:
        "../scripts/mgsm_prompts.py"
