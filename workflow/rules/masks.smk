# Weight-derived Z-masks: results/{model}/masks/L{layer}.h5


rule build_masks:
    """V_Z for every configured k, multi-head and head-0, from the attention kernels."""
    input:
        model=lambda wc: model_dir(wc.model),
    output:
        masks="results/{model}/masks/L{layer}.h5",
    log:
        "logs/{model}/masks_L{layer}.log",
    benchmark:
        "benchmarks/{model}/masks_L{layer}.tsv"
    conda:
        "../../envs/zhunt.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        ks=lambda wc: mask_ks(wc.model),
        kinds=lambda wc: study(wc.model)["mask_kinds"],
    script:
        "../scripts/build_masks.py"
