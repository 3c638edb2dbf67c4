# The report: per-model summary pages, the cross-model page and the report's front page.
# After a run: `snakemake --report results/report.zip` (README, "The report").


report: "../report/workflow.rst"


rule summary:
    """Seed-000 checklist evaluated by code and the headline numbers of one model, from its TSVs."""
    input:
        metrics="results/{model}/patching/metrics.tsv",
        verdict="results/{model}/patching/verdict.md",
        tables="results/{model}/patching/tables",
        subspaces="results/{model}/patching/subspaces.tsv",
        decomposition="results/{model}/decomposition/R.tsv",
        ard_summary="results/{model}/ard/summary.tsv",
        ard_headline="results/{model}/ard/headline.tsv",
        bridge="results/{model}/bridge/bridge.tsv",
        bottleneck="results/{model}/structure/bottleneck.tsv",
        behaviour="results/{model}/behaviour/summary.tsv",
        phase2="results/{model}/zspace/phase2_summary.tsv",
        digit_phase2="results/{model}/zspace/digit_confound.tsv",
        digit_theory="results/{model}/theory/digit_confound.tsv",
        layers="results/{model}/layers/comparison.tsv",
        figures=expand("results/{{model}}/figures/{name}.png", name=SUMMARY_FIGURES),
    output:
        html=report(
            "results/{model}/summary/summary.html",
            caption="../report/summary.rst",
            category=REPORT_CATEGORIES["summary"],
            subcategory="{model}",
            labels=report_labels("summary", "checklist and headline numbers"),
        ),
        json="results/{model}/summary/summary.json",
        checklist=report_item(
            "results/{model}/summary/checklist.tsv",
            "summary",
            "summary",
            "summary",
            "checklist (table)",
        ),
    log:
        "logs/{model}/summary.log",
    benchmark:
        "benchmarks/{model}/summary.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/summary.py"


rule models_summary:
    """Headline numbers of every analysed model side by side."""
    input:
        heads=expand("results/{model}/summary/summary.json", model=config["analyze"]),
        pages=expand("results/{model}/summary/summary.html", model=config["analyze"]),
    output:
        html=report(
            "results/summary/models.html",
            caption="../report/models.rst",
            category=REPORT_CATEGORIES["summary"],
            subcategory="all models",
            labels=report_labels("models", "models side by side"),
        ),
        table=report_item(
            "results/summary/models.tsv",
            "summary",
            "models",
            "models",
            "models side by side (table)",
        ),
    log:
        "logs/models_summary.log",
    benchmark:
        "benchmarks/models_summary.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/summary_models.py"
