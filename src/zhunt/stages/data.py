"""Stages of the prompt and activation rules (``workflow/rules/prompts.smk``, ``activations.smk``):
``organism_prompts``, ``mgsm_prompts``, ``extract_activations`` (also its shard rule) and
``gather_activations``."""

from __future__ import annotations

import logging
import time

from zhunt import __version__

log = logging.getLogger("zhunt.stages.data")

__all__ = ["run_organism_prompts", "run_mgsm_prompts", "run_extract_activations", "run_gather_activations",
           "extract_prompt_set"]


def run_organism_prompts(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """``params.n`` held-out organism problems of ``params.ops`` as a wide prompt table at ``outputs.table``."""
    from zhunt.models.organism import make_organism_prompt_table

    make_organism_prompt_table(outputs["table"], n=params["n"], ops=tuple(params["ops"]))


def run_mgsm_prompts(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Read MGSM's own files in ``params.folder`` (:func:`zhunt.data.prompts.load_mgsm`) and write
    them as a wide prompt table at ``outputs.table``."""
    from zhunt.data.prompts import load_mgsm, write_prompt_table

    languages = list(params["languages"])
    df = load_mgsm(params["folder"], languages, limit=params["limit"])
    write_prompt_table(df, outputs["table"])
    log.info("MGSM %s: %d problems x %s", params["folder"], len(df), languages)


def run_extract_activations(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Hidden states of the prompt table ``inputs.prompts`` (columns ``params.languages``, both of
    the prompt set the rule's ``{promptset}`` names) through ``inputs.model``, stored at
    ``outputs.store`` (:func:`extract_prompt_set`)."""
    extract_prompt_set(
        inputs["model"], wildcards["model"], dict(params["runtime"]), inputs["prompts"],
        list(params["languages"]), inputs["templates"], outputs["store"],
        batch_size=params["batch_size"], dtype=params["dtype"], threads=threads, layers=params["layers"],
        study_layers=list(params["study_layers"]), shard=params["shard"],
    )


def run_gather_activations(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Join the shard stores ``inputs.shards`` into one store at ``outputs.store``
    (:func:`zhunt.data.store.gather_shards`; virtual datasets, no row copied)."""
    from zhunt.data.store import gather_shards

    t0 = time.perf_counter()
    info = gather_shards(list(inputs["shards"]), outputs["store"])
    log.info("gathered %d shards (%d prompts, %d rows, %d virtual mappings per layer) in %.2fs",
             info["n_shards"], info["n_prompts"], info["n_rows"], info["n_mappings"], time.perf_counter() - t0)


def _store_attrs(model_dir, model_name: str, spec: dict, prompts_path) -> dict:
    """What an activation store says about itself: model, its source and weights, dtype,
    prompt file (path and hash), template and package version."""
    from zhunt.data.prompts import file_sha256
    from zhunt.models.loader import read_provenance, weights_sha256

    provenance = read_provenance(model_dir)
    return {
        "model": model_name,
        "model_source": str(provenance.get("source", "")),
        "model_revision": str(provenance.get("revision") or ""),
        "model_weights_sha256": weights_sha256(model_dir),
        "gguf_sha256": str(provenance.get("gguf_sha256") or ""),
        "compute_dtype": spec["dtype"],
        "prompt_file": str(prompts_path),
        "prompt_file_sha256": file_sha256(prompts_path),
        "template": spec["template"],
        "zhunt_version": __version__,
    }


def extract_prompt_set(model_dir, model_name: str, spec: dict, prompts_path, languages,
                       templates_path, out_path, *, batch_size: int = 16,
                       dtype: str = "float32", threads: int | None = None, layers="all",
                       study_layers=(), shard=None) -> None:
    """Render a prompt set with the model's template and store every layer's hidden states.

    ``spec`` is the model's runtime (``dtype``, ``template``: rule param ``runtime``);
    ``languages`` are the columns of ``prompts_path`` to render (they must come from the same
    prompt set as the file); ``layers`` (config ``extraction.layers``: all, study or a list of
    hidden indices) and ``study_layers`` (the configured layers ``study`` keeps) pick the hidden
    indices with token rows (:func:`zhunt.models.site.store_hidden_indices`); ``shard`` =
    ``(i, N)`` writes shard ``i`` of ``N`` (``extraction.shards``).
    """
    import torch

    from zhunt.data.extraction import extract_to_store
    from zhunt.data.prompts import (check_context_length, load_prompt_table, load_templates, model_context_length,
                                    render_prompts, to_long)
    from zhunt.models import get_adapter, load_model
    from zhunt.models.site import store_hidden_indices

    if threads:
        torch.set_num_threads(int(threads))
    long = to_long(load_prompt_table(prompts_path, languages=languages), languages)
    model, tok = load_model(model_dir, dtype=spec["dtype"])
    templates = load_templates(templates_path)
    family = spec["template"]
    long = long.assign(text=render_prompts(long, family, templates, tokenizer=tok))
    # a chat template already writes BOS and the turn markers itself
    chat = templates["families"][family]["kind"] == "chat"
    check_context_length(long, long["text"], tok, model_context_length(model), add_special_tokens=not chat)
    ad = get_adapter(model)
    keep = store_hidden_indices(layers, list(study_layers), ad.num_layers)
    t0 = time.perf_counter()
    info = extract_to_store(
        model, tok, ad.layers, long, out_path, batch_size=batch_size, dtype=dtype,
        add_special_tokens=not chat, hidden_indices=keep, shard=tuple(shard) if shard else None,
        attrs=_store_attrs(model_dir, model_name, spec, prompts_path),
    )
    log.info("extracted %d prompts x %d layers (token rows kept at %s%s) in %.1fs", info["n_prompts"],
             ad.num_layers, "all indices" if keep is None else keep,
             f", shard {shard[0]} of {shard[1]}" if shard else "", time.perf_counter() - t0)
