"""Stage of rule ``behaviour`` (Phase 0): greedy generation for every problem in every language, scored.

Renders the prompts with the model's template (:mod:`zhunt.data.prompts`), generates
(:func:`zhunt.models.generation.generate`), scores and summarises
(:mod:`zhunt.experiments.behaviour`) and writes the rule's outputs (:mod:`zhunt.report.behaviour`).
"""

from __future__ import annotations

import logging
import time

from zhunt.errors import ZhuntError
from zhunt.io import write_table, write_text
from zhunt.stages.paths import figure_stem, table_paths

__all__ = ["render_behaviour_prompts", "run_behaviour"]

log = logging.getLogger("zhunt.stages.behaviour")


def render_behaviour_prompts(prompts_path, languages, templates_path, family: str, fewshot_path, n_shots: int,
                             tok, context_length: int, max_new_tokens: int):
    """The long prompt table (one row per problem x language) with each rendered ``prompt``.

    Checks that every prompt plus ``max_new_tokens`` fits ``context_length``
    (:func:`zhunt.data.prompts.check_context_length`). Returns ``(table, long, chat)``: the wide
    prompt table, the long one, and whether ``family`` is a chat template (it then writes BOS itself).
    """
    from zhunt.data.prompts import check_context_length, load_prompt_table, load_templates, render_prompts, to_long

    table = load_prompt_table(prompts_path, languages=languages)
    long = to_long(table, languages)
    templates = load_templates(templates_path)
    fewshot = load_prompt_table(fewshot_path, languages=languages) if (fewshot_path and n_shots) else None
    long = long.assign(prompt=render_prompts(long, family, templates, fewshot=fewshot, n_shots=int(n_shots),
                                             tokenizer=tok))
    chat = templates["families"][family]["kind"] == "chat"
    check_context_length(long, long["prompt"], tok, context_length, int(max_new_tokens), add_special_tokens=not chat)
    return table, long, chat


def run_behaviour(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """Rule ``behaviour``: records, accuracy summary and figure, and (``outputs["steps"]``, when declared)
    the per-step ``||delta_l^(t)||^2`` of decoder layer ``params["step_layer"]`` (both zh and en needed).

    ``inputs``: ``model``, ``prompts``, ``templates``, ``fewshot`` (optional); ``params``: ``languages``,
    ``runtime`` (its ``template`` family), ``generation`` (``n_shots``, ``max_new_tokens``), ``batch_size``,
    ``step_layer``; ``threads`` sets ``torch.set_num_threads``.
    """
    import torch

    from zhunt.experiments.behaviour import score_generations, step_distances, step_record_modules, summarize_behaviour
    from zhunt.models import get_adapter, load_model
    from zhunt.data.prompts import model_context_length
    from zhunt.models.generation import generate
    from zhunt.report.behaviour import plot_accuracy, summary_markdown
    from zhunt.config import check_layer

    t0 = time.perf_counter()
    model_name, languages = wildcards["model"], list(params["languages"])
    n_shots, max_new = int(params["generation"]["n_shots"]), int(params["generation"]["max_new_tokens"])
    steps_path, step_layer = outputs.get("steps"), params.get("step_layer")
    if steps_path is not None and step_layer is None:
        raise ZhuntError("behaviour.step_layer", "per-step states requested (out_steps) without a layer")
    if steps_path is not None and not {"zh", "en"} <= set(languages):
        raise ZhuntError("behaviour.languages", "per-step zh-en distances need both zh and en")
    if threads:
        torch.set_num_threads(int(threads))
    model, tok = load_model(inputs["model"])
    table, long, chat = render_behaviour_prompts(inputs["prompts"], languages, inputs["templates"],
                                                 params["runtime"]["template"], inputs.get("fewshot"), n_shots, tok,
                                                 model_context_length(model), max_new)
    record = None
    if steps_path is not None:
        check_layer(int(step_layer), get_adapter(model).num_layers, model_name, key="behaviour.step_layer")
        record = step_record_modules(model, int(step_layer))
    gens = generate(model, tok, list(long["prompt"]), max_new_tokens=max_new, batch_size=int(params["batch_size"]),
                    add_special_tokens=not chat, record_layers=record)
    records = score_generations(long, gens)
    summary = summarize_behaviour(records, languages, where=str(inputs["prompts"]))
    write_table(records, outputs["records"])
    summary_tsv, summary_md = table_paths(outputs["summary"])
    write_table(summary, summary_tsv)
    write_text(summary_md, summary_markdown(summary, model_name, n_shots))
    plot_accuracy(summary, figure_stem(outputs["fig"]), title=f"{model_name}: Phase 0 accuracy ({n_shots}-shot)")
    if steps_path is not None:
        steps = step_distances(long, gens, where=str(inputs["prompts"]))
        steps.insert(0, "layer", int(step_layer))
        write_table(steps, steps_path)
    log.info("behaviour %s: accuracy %s on %d problems in %.1fs", model_name,
             dict(zip(summary["lang"], summary["accuracy"].astype(float))), len(table), time.perf_counter() - t0)
