"""Benchmark: one ARD-MMD optimisation step against the FLOP floor of its kernel computations.

Usage::

    python bench/ard.py --quick
    python bench/ard.py [--d 2048 --problems 20 --tokens 40 --n-neg 16] [--steps 10] [--threads 1]
                        [--device cuda]
    python bench/ard.py --store results/gemma3-270m/activations/math.h5 \\
                        --mask-dir results/gemma3-270m/masks --layers 15 --max-steps 50
    git show REV:src/zhunt/activations/mmd.py > /tmp/old_mmd.py
    python bench/ard.py --d 640 --problems 70 --tokens 35 --baseline /tmp/old_mmd.py --steps 9

``--baseline`` times the step side by side with another version of
:mod:`zhunt.activations.mmd` (its ``CloudSet`` on the same clouds and pairs),
alternating the two arms step by step, and prints the CPU-time ratio and the
largest difference of the objective and its gradient between them.

Synthetic part (always): random token clouds of the given shape (lengths drawn
uniformly in ``[tokens/2, 3 tokens/2]``, fixed seed) in one
:class:`zhunt.activations.ard.ArdProblem`; for each objective (``seed``: self + language
blocks; ``wellposed``: + ``n_neg`` contrast pairs per problem) the time of one
step (forward + backward + Adam, median of ``--steps`` after one warm-up;
process CPU time on the CPU so other processes on the cores do not count, wall
time on a GPU) is compared with

* the FLOP floor: ``2 x sum over blocks 2 n_a n_b d`` — the two Gram products
  every exact kernel block needs (forward ``(X_a w) X_b^T``, backward
  ``dG X_b``), without padding;
* the device's matmul rate, measured on a square product of size ``d``
  (``peak``), and the rate of a batched product of one bucket's shape
  (``bmm``), which is what small token clouds can reach.

Printed: ms per step, achieved GFLOP/s, and ``ratio = t_step / (floor /
peak)`` (1 = at the matmul roofline; the elementwise ``expm1`` on
``T x T`` blocks and the ``X w`` products are memory-bound extra work).

Real part (``--store``): the full λ × init × objective × basis grid of
:func:`zhunt.activations.ard.ard_layer` for every ``--layers`` (masks at
``{mask-dir}/L{layer}.h5``), with ``--max-steps`` per run and ``--jobs`` runs at a
time (``n_jobs``, as rule ``ard_layer`` passes its ``threads``); prints the wall
time per layer and the total, and the projection to ``--budget-steps``
(1000, the seed's budget) by linear scaling of the step count.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zhunt.activations.ard import ArdProblem, ard_layer
from zhunt.activations.mmd import resolve_device
from zhunt.data.store import ActivationStore
from zhunt.stages.ard import write_run_file
from zhunt.weights.masks import read_mask


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def clock(dev):
    """Process CPU time on the CPU (insensitive to other processes sharing the cores; with
    --threads 1 it is the time an idle core would take), wall time on an accelerator."""
    return time.process_time if dev.type == "cpu" else time.perf_counter


def matmul_rate(n, dev, repeats=5):
    a = torch.randn(n, n, device=dev)
    a @ a
    sync(dev)
    t = clock(dev)()
    for _ in range(repeats):
        a @ a
    sync(dev)
    return 2 * n ** 3 * repeats / (clock(dev)() - t)


def bmm_rate(P, T, d, dev, repeats=5):
    a, b = torch.randn(P, T, d, device=dev), torch.randn(P, d, T, device=dev)
    torch.bmm(a, b)
    sync(dev)
    t = clock(dev)()
    for _ in range(repeats):
        torch.bmm(a, b)
    sync(dev)
    return 2 * P * T * T * d * repeats / (clock(dev)() - t)


def synthetic(args, dev):
    rng = np.random.default_rng(0)
    lo, hi = max(2, args.tokens // 2), max(3, 3 * args.tokens // 2)
    zh = [rng.standard_normal((int(rng.integers(lo, hi + 1)), args.d)).astype(np.float32) / np.sqrt(args.d)
          for _ in range(args.problems)]
    en = [rng.standard_normal((int(rng.integers(lo, hi + 1)), args.d)).astype(np.float32) / np.sqrt(args.d)
          for _ in range(args.problems)]
    prob = ArdProblem(zh, en, device=dev, n_neg=args.n_neg)
    if args.baseline:
        return side_by_side(args, dev, prob)
    peak = matmul_rate(min(args.d, 4096), dev)
    bmm = bmm_rate(max(1, 2 ** 23 // (2 * args.tokens * args.d)), args.tokens, args.d, dev)
    print(f"synthetic: d={args.d}, N={args.problems} problems, ~{args.tokens} tokens/prompt, n_neg={args.n_neg}, "
          f"device={dev}, torch threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print(f"  matmul peak {peak / 1e9:.1f} GFLOP/s (square d), bmm {bmm / 1e9:.1f} GFLOP/s (one bucket's shape); "
          f"{'process CPU time' if dev.type == 'cpu' else 'wall time'}, step = median of --steps after one warm-up")
    for obj in ("seed", "wellposed"):
        p = torch.zeros(args.d, device=dev, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.01)
        times, walls = [], []
        for _ in range(args.steps + 1):
            sync(dev)
            t, w = clock(dev)(), time.perf_counter()
            opt.zero_grad(set_to_none=True)
            prob.terms(p, obj, 0.01)["total"].backward()
            opt.step()
            sync(dev)
            times.append(clock(dev)() - t)
            walls.append(time.perf_counter() - w)
        ts = statistics.median(times[1:])
        floor = prob.flops_per_step(obj)
        plans = [prob.clouds.self_plan, prob.lang_plan] + ([prob.contrast_plan] if obj != "seed" else [])
        pad_ratio = sum(p.padded_flops_forward for p in plans) / sum(p.flops_forward for p in plans)
        print(f"  {obj:<9s} {ts * 1e3:9.2f} ms/step (wall {statistics.median(walls[1:]) * 1e3:.0f})  "
              f"floor {floor / 1e9:7.3f} GFLOP  "
              f"achieved {floor / ts / 1e9:7.1f} GFLOP/s  ratio to peak floor {ts / (floor / peak):6.1f}x  "
              f"to bmm floor {ts / (floor / bmm):6.1f}x  (padding x{pad_ratio:.2f})")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                opt.zero_grad(set_to_none=True)
                prob.terms(p, obj, 0.01)["total"].backward()
                opt.step()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _swap_cloudset(prob, cloudset_cls):
    """A shallow copy of ``prob`` whose clouds and plans are built by ``cloudset_cls``."""
    import copy

    other = copy.copy(prob)
    cs = prob.clouds
    clouds = [cs.X[o:o + n].cpu().numpy() for o, n in zip(cs.offsets, cs.lengths)]
    other.clouds = cloudset_cls(clouds, device=prob.device, dtype=prob.dtype)
    other.lang_plan = other.clouds.plan(prob.lang_plan.pairs)
    other.contrast_plan = other.clouds.plan(prob.contrast_plan.pairs)
    return other


def side_by_side(args, dev, prob):
    """CPU time of one step, this tree's CloudSet against ``--baseline``'s, arms alternating."""
    spec = importlib.util.spec_from_file_location("mmd_baseline", args.baseline)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    arms = {"this tree": prob, "baseline": _swap_cloudset(prob, mod.CloudSet)}
    print(f"side by side with {args.baseline} ({args.steps} alternating steps per arm after one warm-up each)")
    for obj in ("seed", "wellposed"):
        times = {k: [] for k in arms}
        out = {}
        for i in range(args.steps + 1):
            for name, pr in (arms.items() if i % 2 == 0 else reversed(list(arms.items()))):
                p = torch.zeros(args.d, device=dev, requires_grad=True)
                with torch.no_grad():
                    p += 0.1 * torch.sin(torch.arange(args.d, device=dev, dtype=p.dtype))
                sync(dev)
                t = clock(dev)()
                tot = pr.terms(p, obj, 0.01)["total"]
                tot.backward()
                sync(dev)
                if i:
                    times[name].append(clock(dev)() - t)
                out[name] = (float(tot.detach()), p.grad.detach().cpu().numpy())
        a, b = (statistics.median(times[k]) for k in arms)
        (ta, ga), (tb, gb) = out.values()
        print(f"  {obj:<9s} this tree {a * 1e3:8.2f} ms, baseline {b * 1e3:8.2f} ms: baseline / this = "
              f"{b / a:5.2f}x; |d objective| / |objective| {abs(ta - tb) / abs(tb):.1e}, "
              f"max |d grad| / max |grad| {np.abs(ga - gb).max() / np.abs(gb).max():.1e}")


def real_grid(args, dev):
    lams = [float(x) for x in args.lambdas.split(",")]
    total = total_cpu = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for layer in args.layers:
            mask = Path(args.mask_dir) / f"L{layer}.h5"
            t, c = time.perf_counter(), time.process_time()
            with ActivationStore(args.store) as store:
                res = ard_layer(store, read_mask(mask, "multihead", args.k_warm), "bench", layer, lams,
                                min_steps=args.max_steps, max_steps=args.max_steps, k_warm=args.k_warm, device=dev,
                                n_neg=args.n_neg, n_jobs=args.jobs)
            write_run_file(Path(tmp) / f"L{layer}.h5", res)  # as rule ard_layer does
            dt, dc = time.perf_counter() - t, time.process_time() - c
            total += dt
            total_cpu += dc
            tab = res.table
            per = tab.groupby("objective")["seconds"].sum() / tab.groupby("objective")["steps"].sum()
            print(f"  L{layer}: {len(tab)} runs x {args.max_steps} steps in {dt:.1f} s wall, {dc:.1f} s CPU "
                  f"(s/step: " + ", ".join(f"{k} {v:.3f}" for k, v in per.items()) + ")")
    scale = args.budget_steps / args.max_steps
    print(f"real grid: {len(args.layers)} layer(s) x {len(lams)} λ x 2 init x 2 objectives x 2 bases: "
          f"{total:.1f} s wall, {total_cpu:.1f} s CPU at {args.max_steps} steps; projected "
          f"{total * scale / 60:.1f} min wall as measured, {total_cpu * scale / 60 / torch.get_num_threads():.1f} min "
          f"on idle cores (from CPU time) at {args.budget_steps} steps (no plateau stop)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--problems", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--n-neg", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--store", default=None)
    ap.add_argument("--mask-dir", default=None)
    ap.add_argument("--layers", type=int, nargs="+", default=[15])
    ap.add_argument("--lambdas", default="0.001,0.01,0.1")
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--budget-steps", type=int, default=1000)
    ap.add_argument("--k-warm", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="d=640, 3 steps; real grid at 3 steps")
    ap.add_argument("--jobs", type=int, default=1, help="real grid: runs fitted this many at a time (n_jobs)")
    ap.add_argument("--baseline", default=None, help="another mmd.py to time side by side (synthetic only)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table of one step per objective")
    args = ap.parse_args()
    if args.quick:
        args.d, args.steps, args.max_steps = 640, 3, 3
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    synthetic(args, dev)
    if args.store and args.baseline:
        print("--baseline times the synthetic step only: real grid skipped")
    elif args.store and Path(args.store).exists():
        real_grid(args, dev)
    elif args.store:
        print(f"no store at {args.store}: real grid skipped")


if __name__ == "__main__":
    main()
