"""Glue: Exp. A activation patching (see zhunt.experiments.patching.run_patching)."""

from zhunt.io import snakemake_main
from zhunt.experiments.patching import run_patching


def main(smk):
    layers = list(smk.params.layers)
    opts = smk.params.patching
    run_patching(
        smk.input.model,
        smk.wildcards.model,
        smk.input.store,
        dict(zip(layers, smk.input.masks)),
        smk.input.prompts,
        list(smk.params.languages),
        smk.input.templates,
        smk.params.runtime["template"],
        layers,
        list(smk.params.ks),
        alignments=tuple(opts["alignments"]),
        directions=tuple(opts["directions"]),
        n_random=opts["n_random"],
        max_new_tokens=smk.params.max_new_tokens,
        batch_size=smk.params.batch_size,
        patch_generated=opts["patch_generated"],
        sinkhorn=opts["sinkhorn"],
        sources=tuple(opts.get("sources", ("same", "donor"))),
        out_records=smk.output.records,
        out_metrics_tsv=smk.output.metrics[0],
        out_metrics_md=smk.output.metrics[1],
        out_tables_dir=smk.output.tables,
        out_verdict_md=smk.output.verdict,
        threads=smk.threads,
    )


snakemake_main(snakemake, main)  # noqa: F821
