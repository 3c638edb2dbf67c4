"""Workflow stages as plain functions (the Snakemake scripts only call these).

Each stage reads its inputs, checks them against the model (layer ranges, k),
computes with the science modules and writes its outputs atomically. User
mistakes raise :class:`zhunt.errors.ZhuntError` naming the config key or file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from zhunt import __version__
from zhunt.errors import ZhuntError

log = logging.getLogger("zhunt.stages.pipeline")


def check_layer(layer: int, num_layers: int, model_name: str, key: str = "study") -> None:
    """Raise a one-line error when ``layer`` is not a decoder-layer index of the model."""
    if not 0 <= layer < num_layers:
        raise ZhuntError(
            f"models.{model_name}.{key}",
            f"layer {layer} out of range for {model_name} ({num_layers} decoder layers: 0..{num_layers - 1})",
        )


def check_ks(ks, hidden_size: int, model_name: str, head_dim: int | None = None,
             key: str = "study.phase2_k/patch_k") -> None:
    """Raise a one-line error unless every k satisfies 0 < k < d (and k <= d_head for head-0 masks)."""
    for k in ks:
        if k <= 0:
            raise ZhuntError(f"models.{model_name}.{key}", f"k={k} must be > 0")
        if k >= hidden_size:
            raise ZhuntError(f"models.{model_name}.{key}",
                             f"k={k} must be < d={hidden_size} (the hidden size of {model_name})")
        if head_dim is not None and k > head_dim:
            raise ZhuntError(f"models.{model_name}.{key}",
                             f"k={k} exceeds head_dim={head_dim}: a head-0 kernel has rank <= head_dim "
                             f"(drop 'head0' from study.mask_kinds or lower k)")


def extract_prompt_set(model_dir, model_name: str, spec: dict, prompts_path, languages,
                       templates_path, out_path, *, batch_size: int = 16,
                       dtype: str = "float32", threads: int | None = None, layers="all",
                       study_layers=(), shard=None) -> None:
    """Render a prompt set with the model's template and store every layer's hidden states.

    ``layers`` (config ``extraction.layers``: all, study or a list of hidden
    indices) and ``study_layers`` (the configured layers ``study`` keeps) pick
    the hidden indices with token rows (:func:`zhunt.models.site.store_hidden_indices`);
    ``shard`` = ``(i, N)`` writes shard ``i`` of ``N`` (``extraction.shards``).
    """
    import torch

    from zhunt.data.extraction import extract_to_store
    from zhunt.models import get_adapter, load_model, read_provenance
    from zhunt.models.loader import weights_sha256
    from zhunt.data.prompts import (check_context_length, file_sha256, load_prompt_table, load_templates,
                          model_context_length, render_prompts, to_long)
    from zhunt.models.site import store_hidden_indices

    if threads:
        torch.set_num_threads(int(threads))
    table = load_prompt_table(prompts_path, languages=languages)
    long = to_long(table, languages)
    model, tok = load_model(model_dir, dtype=spec.get("dtype", "float32"))
    provenance = read_provenance(model_dir)
    templates = load_templates(templates_path)
    family = spec.get("template", "completion")
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
        attrs={
            "model": model_name,
            "model_source": str(provenance.get("source", "")),
            "model_revision": str(provenance.get("revision") or ""),
            "model_weights_sha256": weights_sha256(model_dir),
            "gguf_sha256": str(provenance.get("gguf_sha256") or ""),
            "compute_dtype": spec.get("dtype", "float32"),
            "prompt_file": str(prompts_path),
            "prompt_file_sha256": file_sha256(prompts_path),
            "template": spec.get("template", "completion"),
            "zhunt_version": __version__,
        },
    )
    log.info("extracted %d prompts x %d layers (token rows kept at %s%s) in %.1fs", info["n_prompts"],
             ad.num_layers, "all indices" if keep is None else keep,
             f", shard {shard[0]} of {shard[1]}" if shard else "", time.perf_counter() - t0)


def gather_activation_shards(shard_paths, out_path) -> dict:
    """Join the shard stores of a sharded extraction into one store (:func:`zhunt.data.store.gather_shards`)."""
    from zhunt.data.store import gather_shards

    t0 = time.perf_counter()
    info = gather_shards(shard_paths, out_path)
    log.info("gathered %d shards (%d prompts, %d rows, %d virtual mappings per layer) in %.2fs",
             info["n_shards"], info["n_prompts"], info["n_rows"], info["n_mappings"], time.perf_counter() - t0)
    return info


def mgsm_prompt_set(folder, languages, limit, out_path) -> None:
    """Read MGSM's own files (:func:`zhunt.data.prompts.load_mgsm`) and write them as a wide prompt table."""
    from zhunt.data.prompts import load_mgsm, write_prompt_table

    df = load_mgsm(folder, languages, limit=limit)
    write_prompt_table(df, out_path)
    log.info("MGSM %s: %d problems x %s", folder, len(df), list(languages))


def train_organism_stage(model_name: str, train: dict, out_dir, loss_tsv, report_md, figure_png,
                         threads: int = 2) -> dict:
    """Train the model organism and write its training report."""
    from zhunt.models.organism import train_organism, write_training_report

    report = train_organism(Path(out_dir), threads=max(1, int(threads)), **train)
    write_training_report(report, loss_tsv, report_md, figure_png)
    log.info("organism accuracy %s in %.1fs", report.get("accuracy"), report.get("wall_time_s", 0.0))
    return report
