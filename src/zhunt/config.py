"""Configuration checks with one-line messages naming the offending key.

``snakemake.utils.validate`` fills in defaults but reports failures as a
multi-line jsonschema dump; :func:`check_config` runs first and turns the most
relevant failure into ``<key path>: <what was expected>``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from zhunt.errors import ZhuntError


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "config"


def _describe(error) -> tuple[list, str]:
    """(key path, message) of one jsonschema error, naming the key the user wrote.

    An unexpected key is named itself (``models.organism.source.trian: unknown key``) with the
    closest allowed key as a suggestion; a missing required key is named by its path too.
    """
    import difflib

    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            bad = extra[0]
            close = difflib.get_close_matches(str(bad), allowed, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"expected one of {', '.join(allowed)}"
            return path + [bad], f"unknown key ({hint})"
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        if missing:
            kind = error.instance.get("kind")
            why = f" for source kind '{kind}'" if kind is not None and path[-1:] == ["source"] else ""
            return path + [missing[0]], f"missing: required{why}"
    if error.validator == "const" and error.schema.get("description"):
        return path, f"{error.instance!r}: {error.schema['description']} (expected {error.validator_value!r})"
    return path, error.message


def check_schema(config: dict, schema_path) -> None:
    """Raise :class:`ZhuntError` (key path + reason) if ``config`` violates the schema.

    Each model's effective study (``study`` deep-merged with ``models.<name>.study``,
    :func:`study_for`) is validated against the ``study`` schema too, so a nested per-model
    override (``models.<name>.study.layer_das.every: 0``) is checked as strictly as the same key in
    the global ``study``; such an error is named by its path under ``models.<name>.study``.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        path, message = _describe(error)
        raise ZhuntError(_key_path(path), message)
    study_validator = jsonschema.Draft202012Validator({**schema["properties"]["study"],
                                                       "$defs": schema.get("$defs", {})})
    for name in config.get("models") or {}:
        error = jsonschema.exceptions.best_match(study_validator.iter_errors(study_for(config, name)))
        if error is not None:
            path, message = _describe(error)
            raise ZhuntError(_key_path(["models", name, "study", *path]), message)


def merge(base: dict, override: dict | None) -> dict:
    """Deep merge: values of ``override`` win; nested dicts are merged key by key."""
    out = copy.deepcopy(base)
    for key, val in (override or {}).items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def study_for(config: dict, model: str) -> dict:
    """Study parameters of ``model``: ``study`` deep-merged with ``models.<model>.study``."""
    return merge(config.get("study", {}), config["models"][model].get("study"))


def check_layer(layer: int, num_layers: int, model_name: str, key: str = "study", *,
                where: str | None = None) -> None:
    """Raise a one-line error when ``layer`` is not a decoder-layer index of the model
    (``0 <= layer < num_layers``). The message names ``where`` (default
    ``models.<model_name>.<key>``); config validation and the stages both call this."""
    if not 0 <= layer < num_layers:
        raise ZhuntError(where or f"models.{model_name}.{key}",
                         f"layer {layer} out of range for {model_name} ({num_layers} decoder layers: "
                         f"0..{num_layers - 1})")


def check_ks(ks, hidden_size: int, model_name: str, head_dim: int | None = None,
             key: str = "study.phase2_k/patch_k", *, where=None) -> None:
    """Raise a one-line error unless every k satisfies 0 < k < d (and k <= d_head for head-0 masks).

    ``where(i)`` names the key of ``ks[i]`` (default ``models.<model_name>.<key>`` for every k);
    ``head_dim`` is given only when head-0 masks are built (``study.mask_kinds`` holds ``head0``).
    """
    for i, k in enumerate(ks):
        at = where(i) if where else f"models.{model_name}.{key}"
        if k <= 0:
            raise ZhuntError(at, f"k={k} must be > 0")
        if k >= hidden_size:
            raise ZhuntError(at, f"k={k} must be < d={hidden_size} (the hidden size of {model_name})")
        if head_dim is not None and k > head_dim:
            raise ZhuntError(at, f"k={k} exceeds head_dim={head_dim}: a head-0 kernel has rank <= head_dim "
                                 f"(drop 'head0' from study.mask_kinds or lower k)")


#: Source kinds whose tokenizer a generated (organism) prompt set is written for.
GENERATING_KINDS = ("organism", "random")


def promptset_file(config: dict, model: str, promptset: str | None = None) -> str:
    """The prompt table of prompt set ``promptset`` (default: the model's own ``promptset``) as
    ``model`` reads it: ``results/{model}/prompts/{set}.tsv`` for a generated set (rule
    organism_prompts), ``results/prompts/{set}.tsv`` for a MGSM set (rule mgsm_prompts), else
    ``prompts.<set>.path``. The languages of that set label its rows, so a file and its
    languages always come from the same set.

    Raises :class:`ZhuntError` for a generated set asked of a model that is not an organism
    (nor a random model on its tokenizer): no rule writes it.
    """
    ps = promptset or config["models"][model]["promptset"]
    spec = config["prompts"][ps]
    if spec["generated"]:
        kind = config["models"][model]["source"]["kind"]
        if kind not in GENERATING_KINDS:
            raise ZhuntError(f"prompts.{ps}", f"a generated prompt set exists only for an organism (or a random "
                                              f"model on its tokenizer); {model} is of source kind '{kind}'")
        return f"results/{model}/prompts/{ps}.tsv"
    if spec["format"] == "mgsm":
        return f"results/prompts/{ps}.tsv"
    return spec["path"]


def check_semantics(config: dict) -> None:
    """Cross-key checks the schema cannot express (after defaults are filled in)."""
    models = config["models"]
    for i, name in enumerate(config["analyze"]):
        if name not in models:
            raise ZhuntError(f"analyze[{i}]",
                             f"unknown model name '{name}' (registered: {', '.join(sorted(models))})")
    for ps, spec in config["prompts"].items():
        if not spec.get("generated") and not spec.get("path"):
            raise ZhuntError(f"prompts.{ps}", "needs `path` (or `generated: true`)")
    for name, spec in models.items():
        ps = spec["promptset"]
        if ps not in config["prompts"]:
            raise ZhuntError(f"models.{name}.promptset",
                             f"unknown prompt set '{ps}' (defined: {', '.join(sorted(config['prompts']))})")
        src = spec["source"]
        need = {"gguf_package": "package", "gguf": "path", "folder": "path", "hub": "repo"}.get(src["kind"])
        if need and not src.get(need):
            raise ZhuntError(f"models.{name}.source.{need}", f"required for source kind '{src['kind']}'")
        promptset_file(config, name)  # a generated set for a model that cannot read it: one line now
        st = study_for(config, name)
        if not st["ard"]["lambdas"]:
            raise ZhuntError(f"models.{name}.study.ard.lambdas", "needs at least one lambda > 0")
        if st["ard"]["min_steps"] > st["ard"]["max_steps"]:
            raise ZhuntError(f"models.{name}.study.ard.min_steps", "must be <= max_steps")
    check_organism_languages(config)


#: The keys of ``models.<name>`` that preparing the model folder reads
#: (:func:`zhunt.models.loader.prepare_model_folder`).
PREPARATION_KEYS = ("source", "architecture", "dtype")


def preparation_spec(model_config: dict) -> dict:
    """The part of a ``models.<name>`` entry that determines the prepared model folder: its
    :data:`PREPARATION_KEYS`. Rule ``prepare_model`` takes exactly this as its params, so a change of
    the model's ``study``, ``template``, ``promptset`` or forward ``batch_size`` never rebuilds the
    model (and, through it, the activation store and everything downstream)."""
    return {k: copy.deepcopy(model_config[k]) for k in PREPARATION_KEYS if k in model_config}


def organism_train_spec(source: dict) -> dict:
    """An organism's (schema-validated) ``source.train`` with the defaults of
    :func:`zhunt.models.organism.train_organism` filled in for every key left out (one set of defaults)."""
    import inspect

    from zhunt.models.organism import train_organism

    out = {name: p.default for name, p in inspect.signature(train_organism).parameters.items()
           if p.kind is p.KEYWORD_ONLY and p.default is not p.empty}
    out.update(source.get("train") or {})
    return out


def _known_shape(spec: dict, folder: Path) -> tuple[int, int, int] | None:
    """(decoder layers, hidden size, head dim) of a model if known before running anything.

    An organism's shape is its training spec (defaults of :func:`zhunt.models.organism.train_organism`);
    any other model's is the ``config.json`` of its prepared folder, when that exists.
    """
    import json

    src = spec["source"]
    if src["kind"] == "organism":
        train = organism_train_spec(src)
        d = train["hidden_size"]
        return train["n_layers"], d, d // train["n_heads"]
    if src["kind"] == "random" and {"num_hidden_layers", "hidden_size"} <= set(src.get("shape") or {}):
        shape = src["shape"]
        d = int(shape["hidden_size"])
        return (int(shape["num_hidden_layers"]), d,
                int(shape.get("head_dim") or d // int(shape.get("num_attention_heads", 1))))
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg = cfg.get("text_config", cfg)
        d = int(cfg["hidden_size"])
        return int(cfg["num_hidden_layers"]), d, int(cfg.get("head_dim") or d // int(cfg["num_attention_heads"]))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None  # unreadable: the rules that load the model report it


def check_model_shapes(config: dict, models_root="resources/models") -> None:
    """Layers and k of every analysed model against its shape, when the shape is known.

    Raises :class:`ZhuntError` naming the exact key (``models.<m>.study.phase2_k[1]``, or
    ``study.ard.layers[0]`` when the value is inherited from the global study) before any
    job runs; ``auto`` layers and models of unknown shape are checked later by the rules.
    """
    for name in config["analyze"]:
        spec = config["models"][name]
        shape = _known_shape(spec, Path(models_root) / name)
        if shape is None:
            continue
        n_layers, d, head_dim = shape
        own = spec.get("study") or {}
        st = study_for(config, name)

        def key(*parts):
            node = own
            for p in parts:
                if not isinstance(node, dict) or p not in node:
                    return _key_path(["study", *parts])
                node = node[p]
            return _key_path(["models", name, "study", *parts])

        layers = [(key("primary_layer"), st["primary_layer"]),
                  (key("secondary_layer"), st["secondary_layer"])]
        layers += [(f"{key('phase2_layers')}[{i}]", v) for i, v in enumerate(st["phase2_layers"])]
        layers += [(f"{key('ard', 'layers')}[{i}]", v) for i, v in enumerate(st["ard"]["layers"])]
        for where, layer in layers:
            if layer != "auto":
                check_layer(layer, n_layers, name, where=where)
        skey = "structure.k"
        sk = config["structure"]["k"]
        if sk > head_dim or sk >= d:
            raise ZhuntError(skey, f"k={sk} exceeds what {name} allows (0 < k <= head_dim={head_dim} and "
                                   f"k < d={d}): the per-layer attention subspaces have rank <= head_dim")
        if n_layers < 3:
            raise ZhuntError(f"models.{name}.source", f"{name} has {n_layers} decoder layers: the structure "
                                                      "stage (phases, bottleneck) needs at least 3")
        anchor = config["structure"]["qk_anchor"]
        if not -n_layers <= anchor < n_layers:
            raise ZhuntError("structure.qk_anchor", f"layer {anchor} out of range for {name} ({n_layers} "
                                                    f"decoder layers: 0..{n_layers - 1}, or -1..-{n_layers} "
                                                    "from the last)")
        for kkey in ("patch_k", "phase2_k"):
            check_ks(st[kkey], d, name, head_dim if "head0" in st["mask_kinds"] else None,
                     where=lambda i, kkey=kkey: f"{key(kkey)}[{i}]")


#: Fewest problems (paired across languages) each stage of the default DAG can run on: the
#: stage's own check, moved to parse time so that no job runs on a set some later rule rejects.
MIN_PROBLEMS: dict[str, int] = {
    "ard_heldout (Exp. C held-out permutation test, zhunt.activations.ard)": 6,
    "bridge (Exp. D leave-one-out maps, zhunt.experiments.bridge)": 3,
    "theory (seed-003 cross-lingual maps, zhunt.activations.theory)": 3,
    "phase2 (zhunt.activations.zspace)": 2,
    "ard_layer (MMD contrast, zhunt.activations.ard)": 2,
}


def check_prompt_tables(config: dict) -> dict[str, int]:
    """Load and validate every hand-written prompt set and MGSM folder (one line naming ``path:line``);
    ``config`` has the schema's defaults filled in.

    Returns
    -------
    dict
        ``{prompt set: number of problems}`` of every hand-written or MGSM set.
    """
    from zhunt.data.prompts import load_mgsm, load_prompt_table

    counts = {}
    for ps, spec in config["prompts"].items():
        if spec["generated"]:
            continue
        if spec["format"] == "mgsm":
            table = load_mgsm(spec["path"], spec["languages"], limit=spec["limit"])
        else:
            table = load_prompt_table(spec["path"], languages=spec["languages"])
        counts[ps] = len(table)
    return counts


def check_problem_counts(config: dict, counts: dict[str, int]) -> None:
    """Every analysed model's prompt set holds enough problems for every stage (:data:`MIN_PROBLEMS`).

    ``counts`` are the sizes of the hand-written sets (:func:`check_prompt_tables`); a generated
    set has ``prompts.<set>.n`` problems. The message names the key to raise (``n``, or the
    table's path) and the stage that needs the most.
    """
    stage, need = max(MIN_PROBLEMS.items(), key=lambda kv: kv[1])
    for name in config["analyze"]:
        ps = config["models"][name]["promptset"]
        spec = config["prompts"][ps]
        if spec["generated"]:
            n, where = spec["n"], f"prompts.{ps}.n"
        elif ps in counts:
            n, where = counts[ps], f"{spec['path']}"
        else:
            continue
        if n < need:
            raise ZhuntError(where, f"{n} problem{'s' * (n != 1)} in prompt set '{ps}' (model {name}): "
                                    f"stage {stage} needs at least {need}")


def check_organism_languages(config: dict) -> None:
    """A generated (organism) prompt set asks only for languages the organism speaks."""
    from zhunt.models.organism import LANGUAGES

    for name in config["analyze"]:
        spec = config["models"][name]
        ps = spec["promptset"]
        pspec = config["prompts"][ps]
        if spec["source"]["kind"] != "organism" or not pspec["generated"]:
            continue
        for i, lang in enumerate(pspec["languages"]):
            if lang not in LANGUAGES:
                raise ZhuntError(f"prompts.{ps}.languages[{i}]",
                                 f"'{lang}': the organism {name} speaks only {', '.join(LANGUAGES)}")
