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
