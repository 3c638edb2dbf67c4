"""Benchmark: extraction and the structure stage at Qwen2.5-3B's shape, random init, on CPU.

Usage::

    python bench/structure.py [--layers 3] [--n 16] [--repeats 3] [--threads 2]
    python bench/structure.py --quick          # 8 prompts, 1 repeat, breakdown skipped

No download: a ``Qwen2ForCausalLM`` is built from config numbers only
(Qwen2.5-3B: d=2048, 16 query heads, 2 kv heads, d_head=128, d_ff=11008,
vocab 151936, tied embeddings, float32, ``torch.manual_seed(0)``) with
``--layers`` decoder layers (the full 36 would need ~12 GB; every layer has the
same shape, so cost per layer is measured on a few and projected to 36).
Prompts: ``resources/prompts/math.tsv`` (en + zh) rendered with the completion
template and tokenised by the SmolLM2 tokenizer (ids < 151936; Qwen's own
tokenizer is not available offline, so token counts are approximate).

Times (medians of ``--repeats``; the two extraction arms interleaved):

* ``hidden``      bare HF forward with ``output_hidden_states=True``;
* ``extract``     :func:`zhunt.data.extraction.extract_to_store` (to a temp HDF5);
* ``analyze``     :func:`zhunt.weights.structure.analyze_model` on all built layers
                  (= the structure stage's compute, per layer);
* breakdown (one run each) of one layer's :func:`zhunt.weights.structure.layer_structure`
  (head spectra, multi-head kernel Gram + eigh, attention effective ranks, FFN);
* ``grassmann``   all 36 x 36 layer pairs, multi-head and per head, on random
                  k-dim subspaces.

Prints seconds per prompt and per prompt-layer, seconds per layer of the
structure stage, and projections for the real study (36 layers; 70 problems x 5
languages = 350 prompts). Nearly all structure time is float64 LAPACK in
numpy/scipy (OpenBLAS): on a shared machine ``OPENBLAS_NUM_THREADS=1`` avoids
oversubscription.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import interleaved, machine, medians, spread  # noqa: E402

from zhunt.data.extraction import extract_to_store  # noqa: E402
from zhunt.models.batching import left_pad, tokenize_prompts  # noqa: E402
from zhunt.weights.masks import head_factors, kernel_gram, top_right_singular  # noqa: E402
from zhunt.models import get_adapter  # noqa: E402
from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long  # noqa: E402
from zhunt.weights.structure import (analyze_model, energy_fraction, grassmann_matrix, grassmann_per_head,  # noqa: E402
                             head_kernel_spectra, singular_values)
from zhunt.subspace import effective_rank, random_subspace  # noqa: E402

QWEN25_3B = dict(hidden_size=2048, num_attention_heads=16, num_key_value_heads=2, intermediate_size=11008,
                 vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6,
                 tie_word_embeddings=True, num_hidden_layers=36)
STUDY_PROMPTS = 350  # 70 problems x 5 languages (config.yaml prompts.math)


def build_model(layers: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**{**QWEN25_3B, "num_hidden_layers": layers})
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).float().eval()
    return model


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=3, help="decoder layers built (>= 3)")
    ap.add_argument("--n", type=int, default=16, help="prompts extracted")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tokenizer", default="/tmp/zhunt-models/smollm2-135m")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="8 prompts, 1 repeat, no per-part breakdown")
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = min(args.n, 8), 1
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    model = build_model(args.layers)
    t_build = time.perf_counter() - t0
    ad = get_adapter(model)
    tok = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    long = to_long(load_prompt_table("resources/prompts/math.tsv", languages=["en", "zh"]), ["en", "zh"])
    long = long.assign(text=render_prompts(long, "completion", load_templates("resources/prompts/templates.yaml"),
                                           tokenizer=tok)).head(args.n)
    ids = tokenize_prompts(tok, list(long["text"]))
    n_tok = sum(map(len, ids))
    order = np.argsort(-np.array([len(s) for s in ids]), kind="stable")
    batches = [left_pad([ids[i] for i in order[s:s + args.batch_size]], tok.pad_token_id)
               for s in range(0, len(order), args.batch_size)]
    tmp = tempfile.TemporaryDirectory(prefix="zhunt-bench-")

    def hidden():
        with torch.inference_mode():
            for input_ids, mask, pos in batches:
                model(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False,
                      output_hidden_states=True, logits_to_keep=1)

    def extract():
        extract_to_store(model, tok, ad.layers, long, Path(tmp.name) / "x.h5", batch_size=args.batch_size)

    print(f"# bench/structure.py  {machine()}")
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"Qwen2.5-3B shape, random init, {args.layers} of 36 layers ({n_params / 1e6:.0f}M params, "
          f"built in {t_build:.1f} s); {len(long)} prompts, {n_tok} tokens, batch {args.batch_size}, "
          f"repeats {args.repeats}")
    cpu = {}
    times = interleaved({"hidden": hidden, "extract": extract}, args.repeats, cpu=cpu)
    med, cmed = medians(times), medians(cpu)
    L = args.layers
    for k in ("hidden", "extract"):
        print(f"  {k:8s} median {med[k]:7.2f} s wall ({spread(times[k])}), {cmed[k]:7.2f} s CPU  "
              f"{med[k] / len(long):6.3f} s/prompt  {med[k] / len(long) / L:7.4f} s/prompt/layer  "
              f"{n_tok / med[k]:6.0f} tok/s")
    print(f"  ratio extract / hidden = {med['extract'] / med['hidden']:.3f} wall, "
          f"{cmed['extract'] / cmed['hidden']:.3f} CPU (goal <= 1.15)")
    per_pl = med["extract"] / len(long) / L
    proj = per_pl * STUDY_PROMPTS * 36
    cproj = cmed["extract"] / len(long) / L * STUDY_PROMPTS * 36 / torch.get_num_threads()
    print(f"  projection: extraction of {STUDY_PROMPTS} prompts x 36 layers ~ {proj / 60:.1f} min wall as measured "
          f"(load included), ~{cproj / 60:.1f} min on {torch.get_num_threads()} idle cores from CPU time "
          f"(per-layer cost x 36; embedding/LM head counted per layer, a slight overestimate)")

    c0 = time.process_time()
    t_an = best_of(lambda: analyze_model(ad, k=args.k), 1)  # seconds per call: one run is enough
    c_an = time.process_time() - c0
    print(f"  analyze_model: {t_an:.2f} s wall for {L} layers = {t_an / L:.2f} s/layer "
          f"(CPU {c_an / L:.2f} s/layer)")
    if not args.quick:
        w = ad.layer_weights(0)
        Q, K, kv = head_factors(w)
        d, k = ad.hidden_size, args.k

        def attn_mats():
            for M in (w.W_Q.reshape(-1, d), w.W_K.reshape(-1, d), w.W_V.reshape(-1, d),
                      w.W_O.permute(1, 0, 2).reshape(d, -1)):
                effective_rank(singular_values(M))

        def ffn():
            gate = w.gate.double().numpy()
            G = gate.T @ gate
            _, sig = top_right_singular(G, k)
            effective_rank(sig)
            effective_rank(singular_values(w.up))
            effective_rank(singular_values(w.down))
            V_gate, _ = top_right_singular(G, k)
            energy_fraction(V_gate, random_subspace(k, d, 0))

        for name, fn in {"head_spectra": lambda: head_kernel_spectra(Q, K, kv, k),
                         "kernel_gram": lambda: top_right_singular(kernel_gram(Q, K), k),
                         "attn_mats": attn_mats, "ffn": ffn}.items():
            c0 = time.process_time()
            t = best_of(fn, 1)
            print(f"    {name:<13s} {t:7.2f} s wall, {time.process_time() - c0:7.2f} s CPU / layer")
    rng = np.random.default_rng(0)
    k, H = args.k, ad.num_heads
    V = np.stack([random_subspace(k, ad.hidden_size, rng) for _ in range(36)])
    Vh = np.stack([np.stack([random_subspace(k, ad.hidden_size, rng) for _ in range(H)]) for _ in range(36)])
    c0 = time.process_time()
    t_g = best_of(lambda: (grassmann_matrix(V), grassmann_per_head(Vh)), 1)
    c_g = time.process_time() - c0
    print(f"  grassmann (36 x 36 + 36 x 36 x {H}): {t_g:.2f} s wall, {c_g:.2f} s CPU")
    total, ctotal = 36 * t_an / L + t_g, 36 * c_an / L + c_g
    print(f"  projection: structure stage, 36 layers ~ {total / 60:.1f} min wall as measured, "
          f"{ctotal / 60:.1f} CPU-min (model load and figures excluded)")
    print(f"# load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
