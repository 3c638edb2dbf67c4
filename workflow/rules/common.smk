# Python helpers of the workflow: config validation, per-model study parameters,
# and the input functions the rules use. No rule is declared here.
import re
import sys
from pathlib import Path

from snakemake.utils import validate

from zhunt.config import (
    check_model_shapes,
    check_problem_counts,
    check_prompt_tables,
    check_schema,
    check_semantics,
    organism_train_spec,
    preparation_spec,
    promptset_file,
    study_for,
)
from zhunt.errors import ZhuntError
from zhunt.models.site import study_layers
from zhunt.report.summary import FIGURES as SUMMARY_FIGURES

_SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
try:
    check_schema(config, _SCHEMA)  # one-line message naming the key
    validate(config, _SCHEMA)  # fills in defaults
    check_semantics(config)
    check_model_shapes(config, "resources/models")  # layers, k vs a known model shape
except ZhuntError as exc:
    sys.stderr.write(f"zhunt config error: {exc}\n")
    raise SystemExit(1)
try:
    # hand-written prompt sets, one line naming file:line
    _problem_counts = check_prompt_tables(config)
except ZhuntError as exc:
    sys.stderr.write(f"zhunt error: {exc}\n")
    raise SystemExit(1)
try:
    check_problem_counts(config, _problem_counts)  # enough problems for every stage
except ZhuntError as exc:
    sys.stderr.write(f"zhunt config error: {exc}\n")
    raise SystemExit(1)


def study(model):
    """Study parameters of one model (`study` deep-merged with models.<model>.study)."""
    return study_for(config, model)


def canonical(obj):
    """Recursively key-sorted copy: rule params keep one repr whatever the YAML key order,
    so Snakemake's params rerun trigger fires only on real changes."""
    if isinstance(obj, dict):
        return {k: canonical(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    return obj


def model_spec(model):
    """What preparing a model reads of its registry entry (zhunt.config.preparation_spec: source,
    architecture, dtype); its study, template, promptset and batch size never rebuild it.
    """
    return canonical(preparation_spec(config["models"][model]))


def model_batch_size(model, stage="generation"):
    """Prompts per forward pass of `model`: models.<model>.batch_size, else the global
    generation.batch_size (stage "generation": generation and scoring) or extraction.batch_size
    (stage "extraction": the activation store)."""
    own = config["models"][model].get("batch_size")
    return int(own) if own is not None else int(config[stage]["batch_size"])


def model_runtime(model):
    """The part of a model's spec that affects running it (not its study parameters)."""
    spec = config["models"][model]
    return {"dtype": spec["dtype"], "template": spec["template"]}


def models_of_kind(*kinds):
    names = [m for m, s in config["models"].items() if s["source"]["kind"] in kinds]
    # a regex that matches exactly these names (or nothing at all)
    return "|".join(re.escape(m) for m in names) or "(?!x)x"


def model_dir(model):
    return f"resources/models/{model}"


def promptset(model):
    return config["models"][model]["promptset"]


def promptset_languages(model):
    return config["prompts"][promptset(model)]["languages"]


def promptset_path(model, ps=None):
    """The prompt table of prompt set `ps` (default: the model's own) as `model` reads it."""
    return promptset_file(config, model, ps)


def organism_train(model):
    """The organism's source.train as configured (a key left out takes train_organism's default)."""
    return model_spec(model)["source"].get("train", {})


def organism_ops(model):
    """Operations of the organism's task (source.train.ops or train_organism's default)."""
    return list(organism_train_spec(config["models"][model]["source"])["ops"])


def mgsm_promptsets():
    """A regex matching exactly the prompt sets read from MGSM files (or nothing)."""
    names = [ps for ps, s in config["prompts"].items() if s.get("format") == "mgsm"]
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


def mgsm_files(promptset):
    """The benchmark's language files a MGSM prompt set reads."""
    spec = config["prompts"][promptset]
    return [str(Path(spec["path"]) / f"mgsm_{lang}.tsv") for lang in spec["languages"]]


def store_study_layers(model):
    """The configured layers `extraction.layers: study` keeps (only then; else [], so that
    other study changes never re-trigger extraction)."""
    if config["extraction"]["layers"] != "study":
        return []
    return study_layers(study(model))


def theory_generations(model):
    """Phase 0's records for the seed-003 generation-length test, or none (theory.generation_lengths: prompt)."""
    if config["theory"]["generation_lengths"] == "prompt":
        return []
    return [f"results/{model}/behaviour/records.tsv"]


def extraction_shards():
    return int(config["extraction"]["shards"])


def unsharded_promptsets():
    """Prompt-set wildcard of extract_activations: any name, or none when sharded."""
    return r"[A-Za-z0-9_-]+" if extraction_shards() == 1 else "(?!x)x"


def sharded_promptsets():
    """Prompt-set wildcard of gather_activations: any name when sharded, else none."""
    return r"[A-Za-z0-9_-]+" if extraction_shards() > 1 else "(?!x)x"


def shard_files(wildcards):
    """The shard stores a gathered activation store joins (extraction.shards > 1)."""
    n = extraction_shards()
    stem = f"results/{wildcards.model}/activations/{wildcards.promptset}"
    return [f"{stem}.shard{i}of{n}.h5" for i in range(n)]


def bottleneck_file(model):
    """structure/bottleneck.tsv (waits for the `structure` checkpoint; an input of rules whose params
    read the predicted layer)."""
    return checkpoints.structure.get(model=model).output.bottleneck


def predicted_bottleneck(model):
    """The bottleneck layer predicted from weights (waits for the `structure` checkpoint)."""
    import pandas as pd

    return int(pd.read_csv(bottleneck_file(model), sep="\t")["predicted_layer"].iloc[0])


def resolve_layer(model, layer):
    """A configured layer: an integer, or `auto` = the predicted bottleneck."""
    return predicted_bottleneck(model) if layer == "auto" else int(layer)


def mask_layers(model):
    """Every layer some analysis needs a Z-mask for."""
    st = study(model)
    layers = [
        st["primary_layer"],
        st["secondary_layer"],
        *st["phase2_layers"],
        *st["ard"]["layers"],
    ]
    return sorted({resolve_layer(model, l) for l in layers})


def study_site(model):
    """The primary site of a model's Z-based analyses (study.site; see zhunt.models.site)."""
    return study(model)["site"]


def study_site_variants(model):
    """Extra sites analysed as sensitivity rows (study.site_variants, the primary one dropped)."""
    return [s for s in study(model)["site_variants"] if s != study_site(model)]


def phase2_layers(model):
    return [resolve_layer(model, l) for l in study(model)["phase2_layers"]]


def patch_layers(model):
    """Primary then secondary layer (Exp. A; the primary's Z is Exp. B's basis)."""
    st = study(model)
    return [
        resolve_layer(model, st["primary_layer"]),
        resolve_layer(model, st["secondary_layer"]),
    ]


#: Name pattern of an Exp. A cell (zhunt.experiments.patching_design.Cell.name).
PATCHING_CELL_RE = (
    r"(input|output)_L\d+_k\d+_(mean|ot|aligned)_[a-z]{2}-from-[a-z]{2}_donor"
)


def _cell_name(site, layer, k, alignment, direction):
    t, s = direction.split("<-")
    return f"{site}_L{layer}_k{k}_{alignment}_{t}-from-{s if alignment != 'aligned' else t}_donor"


def patching_cells(model):
    """Exp. A interchange cells: sites x layers x k x alignments (+ aligned) x directions."""
    st = study(model)
    pt = st["patching"]
    sites = [st["site"], *[s for s in st["site_variants"] if s != st["site"]]]
    aligns = [*pt["alignments"], *(["aligned"] if pt["aligned"] else [])]
    names = [
        _cell_name(site, l, k, a, d)
        for site in sites
        for l in patch_layers(model)
        for k in st["patch_k"]
        for a in aligns
        for d in pt["directions"]
    ]
    return list(dict.fromkeys(names))


def patching_cell_files(model):
    return [f"results/{model}/patching/cells/{c}.tsv" for c in patching_cells(model)]


def patching_cell_layer(cell):
    return int(re.search(r"_L(\d+)_", cell).group(1))


def patching_das_input(model, cell):
    """The DAS basis a cell scores (empty when study.patching.das.enabled is false)."""
    if not study(model)["patching"]["das"]["enabled"]:
        return []
    m = re.match(r"(input|output)_L(\d+)_k(\d+)_[a-z]+_([a-z]{2})-from-", cell)
    site, layer, k, lang = m.groups()
    return [f"results/{model}/patching/das/{site}_L{layer}_k{k}_{lang}.h5"]


#: The study.patching keys each Exp. A rule reads (a change of any other key does not rerun it).
PATCHING_PARAM_KEYS = {
    "grid": [
        "alignments",
        "directions",
        "n_random",
        "patch_generated",
        "sinkhorn",
        "sources",
    ],
    "cell": ["n_donors", "ms_ablation"],
    "das": ["n_donors", "das"],
}


def patching_params(model, rule):
    """The part of study.patching that rule `patching` ("grid"), `patching_cell` or `patching_das` reads."""
    pt = study(model)["patching"]
    return {k: pt[k] for k in PATCHING_PARAM_KEYS[rule]}


def patching_ms_input(model):
    """The M_s basis file of the cells' ms_ablation rows (empty when study.patching.ms_ablation.enabled is false)."""
    if not study(model)["patching"]["ms_ablation"]["enabled"]:
        return []
    return [f"results/{model}/zspace/ms_basis.h5"]


def patching_max_new_tokens(model):
    """Greedy budget of the Exp. A cells and of the DAS fit (study.patching.max_new_tokens or generation's)."""
    st = study(model)
    return st["patching"]["max_new_tokens"] or st["generation"]["max_new_tokens"]


def patching_primary(model):
    """The pre-registered primary cell (study.patching.primary; null = primary_layer / largest k)."""
    st = study(model)
    pr = st["patching"]["primary"]
    layer = resolve_layer(
        model, pr["layer"] if pr["layer"] is not None else st["primary_layer"]
    )
    k = pr["k"] if pr["k"] is not None else max(st["patch_k"])
    return _cell_name(st["site"], layer, k, pr["alignment"], pr["direction"])


def ard_layers(model):
    return sorted({resolve_layer(model, l) for l in study(model)["ard"]["layers"]})


def ard_primary(model):
    """The primary layer if ARD runs there, else the ARD layer closest to it."""
    primary = resolve_layer(model, study(model)["primary_layer"])
    return min(ard_layers(model), key=lambda l: (abs(l - primary), l))


def primary_k(model):
    """The primary k of the layer sweep: the largest study.patch_k (the Exp. A primary k)."""
    return max(study(model)["patch_k"])


def layer_das_include(model):
    """Layers the DAS sweep always covers: the predicted bottleneck and the primary / secondary layer."""
    st = study(model)
    return sorted(
        {
            predicted_bottleneck(model),
            resolve_layer(model, st["primary_layer"]),
            resolve_layer(model, st["secondary_layer"]),
        }
    )


def layer_das_options(model):
    """The DAS fit of the sweep: study.layer_das's steps and init, study.patching.das's lr and minibatch."""
    ld, das = study(model)["layer_das"], study(model)["patching"]["das"]
    return {
        "steps": ld["steps"],
        "init": ld["init"],
        "lr": das["lr"],
        "batch_size": das["batch_size"],
    }


def layer_das_input(model):
    """The DAS sweep's table for the layer comparison (empty when study.layer_das.enabled is false)."""
    if not study(model)["layer_das"]["enabled"]:
        return []
    return [f"results/{model}/layers/das.tsv"]


def layer_patching_das_input(model):
    """Without the DAS sweep, the comparison reads DAS at the patching layers from subspaces.tsv."""
    if (
        study(model)["layer_das"]["enabled"]
        or not study(model)["patching"]["das"]["enabled"]
    ):
        return []
    return [f"results/{model}/patching/subspaces.tsv"]


def layer_targets(model):
    return [f"results/{model}/layers/verdict.md"]


def mask_files(model, layers):
    return [f"results/{model}/masks/L{l}.h5" for l in layers]


def activations_path(model):
    return f"results/{model}/activations/{promptset(model)}.h5"


def provenance(model, layers=()):
    """`params.provenance` of a rule that reads the model's activation store, Z-masks or ARD
    runs: what each file must say about itself (zhunt.io.expected_provenance; every reader
    checks it, so a stale or copied file stops the job with one line). Masks and ARD runs of
    `layers` must be of that layer; the store of this model, template and prompt file.
    """
    files = {}
    for l in layers:
        files[f"results/{model}/masks/L{l}.h5"] = int(l)
        files[f"results/{model}/ard/L{l}.h5"] = int(l)
    return {
        "model": model,
        "template": model_runtime(model)["template"],
        "prompt_file": promptset_path(model),
        "layers": files,
    }


def mask_ks(model):
    st = study(model)
    return sorted(set(st["patch_k"]) | set(st["phase2_k"]))


def structure_targets(model):
    stem = f"results/{model}/structure"
    return [
        f"{stem}/bottleneck.tsv",
        f"{stem}/families_verdict.md",
        f"{stem}/qk_verdict.md",
    ]


def zspace_targets(model):
    stem = f"results/{model}/zspace"
    return [f"{stem}/phase2_summary.tsv", f"{stem}/datadriven.tsv"]


def theory_targets(model):
    return [
        f"results/{model}/theory/theory_summary.tsv",
        f"results/{model}/theory/garch.tsv",
        "results/theory/toy_theorem.tsv",
    ]


def experiment_targets(model):
    return [
        f"results/{model}/ard/summary.tsv",
        f"results/{model}/ard/heldout.tsv",
        f"results/{model}/bridge/bridge.tsv",
        f"results/{model}/behaviour/summary.tsv",
        f"results/{model}/patching/verdict.md",
        f"results/{model}/patching/subspaces.tsv",
        f"results/{model}/decomposition/R.tsv",
    ]


def model_targets(model):
    return [
        model_dir(model),
        *structure_targets(model),
        activations_path(model),
        *mask_files(model, mask_layers(model)),
        *zspace_targets(model),
        *theory_targets(model),
        *experiment_targets(model),
        *layer_targets(model),
    ]


def summary_targets(model):
    return [f"results/{model}/summary/summary.html"]


def all_targets(wildcards):
    """Targets of the default job; a function so that `auto` layers can wait for a checkpoint."""
    targets = [
        t for m in config["analyze"] for t in model_targets(m) + summary_targets(m)
    ]
    return targets + [
        "results/summary/models.html",
        "results/summary/layer_prediction.tsv",
    ]


# --- report items (`snakemake --report results/report.zip`) --------------------------
# Categories of the report, numbered so that the menu follows the study's order.
REPORT_CATEGORIES = {
    "summary": "0 Summary",
    "structure": "1 Structure (weights)",
    "behaviour": "2 Phase 0 behaviour",
    "zspace": "3 Phase 2 projection",
    "theory": "4 Theory (seed 003)",
    "patching": "5 Exp. A patching",
    "decomposition": "6 Exp. B R(k)",
    "ard": "7 Exp. C ARD-MMD",
    "bridge": "8 Exp. D bridge",
    "organism": "9 Organism training",
    "layers": "10 Layer prediction (weights vs data)",
}


def report_labels(measure, item, **extra):
    """`labels` of a report item: a function Snakemake calls only while it builds the
    report (never while it plans a run, so no rerun trigger). `result` is the measured
    value, read from the TSVs by zhunt.report.summary.measured; the captions print it.
    """

    def labels(wildcards):
        from zhunt.report.summary import measured

        model = getattr(wildcards, "model", None)
        fixed = {"item": item, "model": model or "all models", **extra}
        return {**fixed, "result": measured(measure, model, "results", wildcards)}

    return labels


def report_item(path, stage, caption, measure, item, **extra):
    """`report()` flag of one file: caption in workflow/report/, category by stage,
    subcategory = model, labels = item (+ layer/k) and the measured result."""
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category=REPORT_CATEGORIES[stage],
        subcategory="{model}" if "{model}" in path else "all models",
        labels=report_labels(measure, item, **extra),
    )


def report_figure(stem, stage, caption, measure, item, **extra):
    """A figure's PDF + PNG (as multiext gives them); only the PNG goes into the report."""
    pdf, png = multiext(stem, ".pdf", ".png")
    return [pdf, report_item(png, stage, caption, measure, item, **extra)]


def report_table(stem, stage, caption, measure, item, **extra):
    """A table's TSV + Markdown (as multiext gives them); the TSV goes into the report."""
    tsv, md = multiext(stem, ".tsv", ".md")
    return [report_item(tsv, stage, caption, measure, item, **extra), md]


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    layer=r"\d+",
    promptset=r"[A-Za-z0-9_-]+",
