"""Benchmark: the structure stage at Qwen2.5-3B's shape, on random weights, on CPU.

Usage::

    python bench/structure.py [--layers 36] [--repeats 2] [--threads 2]

No model is built: one decoder layer's weights are drawn with ``torch.randn``
(float32, fixed seed) in Qwen2.5-3B's shapes (d=2048, 16 query heads, 2 kv
heads, d_head=128, d_ff=11008), then timed (best of ``--repeats``):

* ``head_spectra``  per-head kernel singular values + per-head top-k subspaces (thin QR route);
* ``kernel_gram``   multi-head Gram ``sum_h A_h^T A_h`` + its eigh (the multi-head mask);
* ``attn_mats``     effective ranks of W_Q, W_K, W_V, W_O;
* ``ffn``           gate/up/down Gram + eigvalsh, gate top-k (eigh), FFN alignment;
* ``layer_total``   :func:`zhunt.structure.layer_structure`, everything above in one call;
* ``grassmann``     all layer pairs, multi-head (L x L) and per head (L x L x H), on random
                    k-dim subspaces for ``--layers`` layers.

Prints seconds per layer and the projected stage time ``layers * layer_total + grassmann``
(model loading not included). Nearly all time is float64 LAPACK/BLAS in numpy/scipy
(OpenBLAS): on a machine shared with other jobs, ``OPENBLAS_NUM_THREADS=1`` avoids
thread oversubscription, which can otherwise slow eigh/QR several-fold.
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from zhunt.masks import head_factors, kernel_gram, top_right_singular
from zhunt.structure import (energy_fraction, grassmann_matrix, grassmann_per_head, head_kernel_spectra,
                             layer_structure, singular_values)
from zhunt.subspace import effective_rank, random_subspace

QWEN25_3B = dict(d=2048, H=16, H_kv=2, d_head=128, d_ff=11008, L=36)


def random_layer(d, H, H_kv, d_head, d_ff, seed=0):
    """Random float32 weights with the LayerWeights field names and shapes."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * s[-1] ** -0.5  # noqa: E731
    return SimpleNamespace(
        W_Q=r(H, d_head, d), W_K=r(H_kv, d_head, d), W_V=r(H_kv, d_head, d), W_O=r(H, d, d_head),
        kv_head=torch.arange(H) // (H // H_kv), attn_norm=1.0 + 0.1 * torch.randn(d, generator=g),
        q_norm=None, k_norm=None, gate=r(d_ff, d), up=r(d_ff, d), down=r(d, d_ff),
        mlp_norm=1.0 + 0.1 * torch.randn(d, generator=g),
    )


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=QWEN25_3B["L"])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = QWEN25_3B
    k = args.k
    w = random_layer(s["d"], s["H"], s["H_kv"], s["d_head"], s["d_ff"])
    Q, K, kv = head_factors(w)

    def attn_mats():
        d = s["d"]
        for M in (w.W_Q.reshape(-1, d), w.W_K.reshape(-1, d), w.W_V.reshape(-1, d),
                  w.W_O.permute(1, 0, 2).reshape(d, -1)):
            effective_rank(singular_values(M))

    def ffn():  # the FFN part of layer_structure, step by step
        gate = w.gate.double().numpy()
        G = gate.T @ gate
        _, sig = top_right_singular(G, k)
        effective_rank(sig)
        effective_rank(singular_values(w.up))
        effective_rank(singular_values(w.down))
        g = w.mlp_norm.double().numpy()
        V_gate, _ = top_right_singular(g[:, None] * G * g[None, :], k)
        energy_fraction(V_gate, random_subspace(k, s["d"], 0))

    parts = {
        "head_spectra": lambda: head_kernel_spectra(Q, K, kv, k),
        "kernel_gram": lambda: top_right_singular(kernel_gram(Q, K), k),
        "attn_mats": attn_mats,
        "ffn": ffn,
        "layer_total": lambda: layer_structure(w, k=k),
    }
    print(f"Qwen2.5-3B shape: d={s['d']} H={s['H']} H_kv={s['H_kv']} d_head={s['d_head']} d_ff={s['d_ff']}, "
          f"k={k}, torch threads={torch.get_num_threads()}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    times = {}
    for name, fn in parts.items():
        times[name] = best_of(fn, args.repeats)
        print(f"  {name:<13s} {times[name]:8.2f} s / layer")

    L = args.layers
    rng = np.random.default_rng(0)
    V = np.stack([random_subspace(k, s["d"], rng) for _ in range(L)])
    Vh = np.stack([np.stack([random_subspace(k, s["d"], rng) for _ in range(s["H"])]) for _ in range(L)])
    times["grassmann"] = best_of(lambda: (grassmann_matrix(V), grassmann_per_head(Vh)), 1)
    print(f"  {'grassmann':<13s} {times['grassmann']:8.2f} s for {L} layers (L x L + L x L x H)")
    total = L * times["layer_total"] + times["grassmann"]
    print(f"projected stage time ({L} layers, weights only, model load excluded): {total:.0f} s "
          f"= {total / 60:.1f} min")


if __name__ == "__main__":
    main()
