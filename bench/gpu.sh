#!/usr/bin/env bash
# One-shot GPU run: the default DAG (organism + Gemma-3-270M) at the seeds' budgets, timed.
#
#   bash bench/gpu.sh                 # from the repository root, on a machine with a CUDA GPU
#   WORK=/scratch/zhunt-gpu GPU_JOBS=4 bash bench/gpu.sh
#
# Budgets (config overlay written below): 100 new tokens (Phase 0 and Exp. A), both patching
# directions, 5 random subspaces, ARD 500-1000 steps; extraction in 2 shards, batches of 64
# (generation 128). Designed to finish within ~8 minutes on one H200: the DAG runs with
# --cores $(nproc) and up to GPU_JOBS (default 4) GPU-tagged jobs sharing the one device (the
# models are small: 2M and 270M parameters), so the ARD layers, the patching grids of the two
# models and the extraction shards overlap. Then it prints per-stage wall times (the rules'
# benchmark files), the extraction ratio (extract_to_store / HF forward with hidden states,
# bench/extraction.py) and the patching ratio (patched / unpatched batched generation,
# bench/patching.py), both on the GPU.
#
# Runs in a scratch copy ($WORK, default /tmp/zhunt-gpu); prepared model folders already in
# resources/models are linked (read-only), missing ones are built there by the DAG.
# Without CUDA it exits at once with one line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
if ! command -v nvidia-smi > /dev/null 2>&1 || ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
    echo "bench/gpu.sh: no CUDA GPU visible (nvidia-smi / torch.cuda.is_available()); nothing run"
    exit 1
fi
WORK="${WORK:-/tmp/zhunt-gpu}"
GPU_JOBS="${GPU_JOBS:-4}"
CORES="${CORES:-$(nproc)}"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2

mkdir -p "$WORK/resources/models"
for item in Snakefile config.yaml workflow envs profiles resources/prompts; do
    mkdir -p "$WORK/$(dirname "$item")"
    rm -rf "${WORK:?}/$item"
    cp -r "$ROOT/$item" "$WORK/$item"
done
for m in organism gemma3-270m; do
    if [ -f "$ROOT/resources/models/$m/config.json" ] && [ ! -e "$WORK/resources/models/$m" ]; then
        ln -s "$(readlink -f "$ROOT/resources/models/$m")" "$WORK/resources/models/$m"
    fi
done
cat > "$WORK/gpu.yaml" << 'EOF'
# bench/gpu.sh: the seeds' budgets on a GPU (layered on config.yaml)
analyze: [organism, gemma3-270m]   # the two models of the timed run (SmolLM2 is default on CPU)
generation:
  batch_size: 128
extraction:
  batch_size: 64
  shards: 2
models:
  organism:
    study:
      generation:
        max_new_tokens: 100    # the organism stops at EOS after <= 6 tokens anyway
      patching:
        n_random: 5
        max_new_tokens: 100
  gemma3-270m:
    study:
      ard:
        min_steps: 500
        max_steps: 1000
      generation:
        max_new_tokens: 100
      patching:
        max_new_tokens: 100
        n_random: 5
        directions: ["en<-zh", "zh<-en"]
EOF
cd "$WORK"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
"$PY" -m snakemake --cores "$CORES" --resources gpu="$GPU_JOBS" --configfile gpu.yaml \
    --rerun-triggers mtime --keep-going > gpu_run.log 2>&1 || { tail -40 gpu_run.log; echo "bench/gpu.sh: the DAG failed (log: $WORK/gpu_run.log)"; exit 1; }
wall=$(( $(date +%s) - start ))
echo "default DAG at the seeds' budgets: ${wall} s wall ($WORK/gpu_run.log)"
"$PY" - << 'EOF'
from pathlib import Path
import pandas as pd
rows = []
for f in sorted(Path("benchmarks").rglob("*.tsv")):  # benchmarks/[{model}/][patching/cells/]{job}.tsv
    rel = f.relative_to("benchmarks").parts
    b = pd.read_csv(f, sep="\t")
    model, sub = (rel[0], rel[1:-1]) if len(rel) > 1 else ("-", ())
    rows.append((model, "_".join((*sub, f.stem)), "_".join(sub) if sub else None, float(b["s"].iloc[-1]),
                 float(b["max_rss"].iloc[-1])))
df = pd.DataFrame(rows, columns=["model", "job", "group", "wall_s", "max_rss_MB"])
df["stage"] = df["group"].fillna(df["job"].str.replace(r"(_L\d+|_math|_organism|_mgsm|\.shard\d+of\d+)+$", "",
                                                        regex=True))
print(df.groupby(["model", "stage"], sort=False).agg(jobs=("job", "size"), wall_s=("wall_s", "sum"),
      max_rss_MB=("max_rss_MB", "max")).round(1).to_string())
EOF
echo "--- extraction ratio (GPU): extract_to_store / HF forward with hidden states"
for m in organism gemma3-270m; do
    if [ "$m" = organism ]; then extra=(--prompts results/organism/prompts/organism.tsv --template organism); else extra=(); fi
    "$PY" "$ROOT/bench/extraction.py" "resources/models/$m" "${extra[@]}" --device cuda --threads 2 \
        --batch-size 64 --n 120 --repeats 5 --arms bare,hidden,extract 2>&1 | grep -iE "ratio|extract|hidden" | tail -4 \
        || echo "bench/extraction.py failed on $m"
done
echo "--- patching ratio (GPU): patched / unpatched batched generation"
"$PY" "$ROOT/bench/patching.py" resources/models/organism --device cuda --prompts results/organism/prompts/organism.tsv \
    --store results/organism/activations/organism.h5 --mask results/organism/masks/L3.h5 --layer 3 --k 16 \
    --batch-sizes 16,64 --repeats 5 2>&1 | grep -E "patched / unpatched|loop" || echo "bench/patching.py failed on organism"
# Gemma without the one-prompt loop arm: 70 prompts x 100 steps one at a time is minutes per repeat
"$PY" "$ROOT/bench/patching.py" resources/models/gemma3-270m --device cuda --prompts resources/prompts/math.tsv \
    --store results/gemma3-270m/activations/math.h5 --mask results/gemma3-270m/masks/L15.h5 --layer 15 --k 20 \
    --template completion --max-new-tokens 100 --batch-sizes 16,64 --repeats 3 --no-loop 2>&1 \
    | grep -E "patched / unpatched" || echo "bench/patching.py failed on gemma3-270m"
echo "total: $(( $(date +%s) - start )) s"
