# Generated prompt sets (the organism's held-out task in the paired wide format).


rule organism_prompts:
    """Held-out organism problems in the same wide TSV format as the hand-written set."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        "results/{model}/prompts/organism.tsv",
    log:
        "logs/{model}/organism_prompts.log",
    wildcard_constraints:
        model=models_of_kind("organism"),
    conda:
        "../../envs/zhunt.yaml"
    params:
        n=lambda wc: config["prompts"]["organism"].get("n", 60),
    script:
        "../scripts/organism_prompts.py"
