"""Configuration checks with one-line messages naming the offending key.

``snakemake.utils.validate`` fills in defaults but reports failures as a
multi-line jsonschema dump; :func:`check_config` runs first and turns the most
relevant failure into ``<key path>: <what was expected>``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import ZhuntError


def _key_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "config"


def check_schema(config: dict, schema_path) -> None:
    """Raise :class:`ZhuntError` (key path + reason) if ``config`` violates the schema."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ZhuntError(_key_path(error.absolute_path), error.message)


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
        ps = spec.get("promptset", "math")
        if ps not in config["prompts"]:
            raise ZhuntError(f"models.{name}.promptset",
                             f"unknown prompt set '{ps}' (defined: {', '.join(sorted(config['prompts']))})")
        src = spec["source"]
        need = {"gguf_package": "package", "gguf": "path", "folder": "path", "hub": "repo"}.get(src["kind"])
        if need and not src.get(need):
            raise ZhuntError(f"models.{name}.source.{need}", f"required for source kind '{src['kind']}'")
        st = study_for(config, name)
        if not st["ard"]["lambdas"]:
            raise ZhuntError(f"models.{name}.study.ard.lambdas", "needs at least one lambda > 0")
        if st["ard"]["min_steps"] > st["ard"]["max_steps"]:
            raise ZhuntError(f"models.{name}.study.ard.min_steps", "must be <= max_steps")


def _known_shape(spec: dict, folder: Path) -> tuple[int, int, int] | None:
    """(decoder layers, hidden size, head dim) of a model if known before running anything.

    An organism's shape is its training spec (defaults of :func:`zhunt.organism.train_organism`);
    any other model's is the ``config.json`` of its prepared folder, when that exists.
    """
    import json

    src = spec["source"]
    if src["kind"] == "organism":
        train = src.get("train") or {}
        d = int(train.get("hidden_size", 128))
        return int(train.get("n_layers", 6)), d, d // int(train.get("n_heads", 4))
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
            if layer != "auto" and not 0 <= layer < n_layers:
                raise ZhuntError(where, f"layer {layer} out of range for {name} "
                                        f"({n_layers} decoder layers: 0..{n_layers - 1})")
        for kkey in ("patch_k", "phase2_k"):
            for i, k in enumerate(st[kkey]):
                where = f"{key(kkey)}[{i}]"
                if k >= d:
                    raise ZhuntError(where, f"k={k} must be < d={d} (the hidden size of {name})")
                if "head0" in st["mask_kinds"] and k > head_dim:
                    raise ZhuntError(where, f"k={k} exceeds head_dim={head_dim}: a head-0 kernel has rank "
                                            f"<= head_dim (drop 'head0' from study.mask_kinds or lower k)")


def check_prompt_tables(config: dict) -> None:
    """Load and validate every hand-written prompt set and MGSM folder (one line naming ``path:line``)."""
    from .prompts import load_mgsm, load_prompt_table

    for spec in config["prompts"].values():
        if spec.get("generated"):
            continue
        if spec.get("format", "table") == "mgsm":
            load_mgsm(spec["path"], spec.get("languages") or ["en", "zh"], limit=spec.get("limit"))
        else:
            load_prompt_table(spec["path"], languages=spec.get("languages"))
