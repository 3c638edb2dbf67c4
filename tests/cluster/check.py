"""Checks for tests/cluster/slurm_test.sh: the SLURM run against the local run.

(a) Every result file of the slice is identical in both runs: HDF5 files dataset by
    dataset (values, dtype, shape) and attribute by attribute, other files byte for byte.
    Values that record when or how long something ran are left out, and only those: the
    HDF5 attribute `created`, JSON keys ending in `time_s`, and the report's `Wall time`
    line.
(b) Every job of the slice ran through SLURM and completed, on the requested partition;
    the jobs of rules that declare `resources: gpu=1` were allocated the GPU
    (`scontrol -d show job`: TresPerJob, JOB_GRES) and their steps started with
    CUDA_VISIBLE_DEVICES set; the jobs of the other rules got no GPU and no
    CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np

VOLATILE_H5_ATTRS = {"created"}
VOLATILE_JSON_KEY = re.compile(r"time_s$")
VOLATILE_LINE = re.compile(r"^Wall time:")
RESULT_DIRS = ("results", "resources/models")


def gpu_rules(workdir: Path) -> set[str]:
    """Rules whose `resources:` declare gpu=1, read from the workflow source."""
    rules = set()
    for smk in sorted((workdir / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        parts = re.split(r"^rule (\w+):", text, flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            res = re.search(r"^    resources:\n((?:        .*\n)+)", body, flags=re.M)
            if res and re.search(r"^\s*gpu\s*=\s*[1-9]", res.group(1), flags=re.M):
                rules.add(name)
    return rules


def result_files(workdir: Path) -> dict[str, Path]:
    files = {}
    for d in RESULT_DIRS:
        for p in sorted((workdir / d).rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                files[str(p.relative_to(workdir))] = p
    return files


def h5_digest(path: Path) -> dict[str, str]:
    """name -> digest of every group/dataset, values and attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        def attrs(obj):
            return {k: repr(np.asarray(v).tolist()) for k, v in sorted(obj.attrs.items())
                    if k not in VOLATILE_H5_ATTRS}

        out["/@attrs"] = json.dumps(attrs(f))

        def visit(name, obj):
            h = hashlib.sha256(json.dumps(attrs(obj)).encode())
            if isinstance(obj, h5py.Dataset):
                a = obj[()]
                h.update(f"{obj.dtype}{obj.shape}".encode())
                h.update(np.ascontiguousarray(a).tobytes() if a.dtype != object
                         else repr(a.tolist()).encode())
            out[name] = h.hexdigest()

        f.visititems(visit)
    return out


def strip_json(obj):
    if isinstance(obj, dict):
        return {k: strip_json(v) for k, v in obj.items() if not VOLATILE_JSON_KEY.search(k)}
    if isinstance(obj, list):
        return [strip_json(v) for v in obj]
    return obj


def digest(path: Path):
    if path.suffix == ".h5":
        return h5_digest(path)
    if path.suffix == ".json":
        return strip_json(json.loads(path.read_text()))
    if path.suffix in (".md", ".txt"):
        return [line for line in path.read_text().splitlines() if not VOLATILE_LINE.match(line)]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compare_results(local: Path, slurm: Path) -> list[str]:
    errors = []
    a, b = result_files(local), result_files(slurm)
    if set(a) != set(b):
        errors.append(f"file sets differ: only local {sorted(set(a) - set(b))}, "
                      f"only slurm {sorted(set(b) - set(a))}")
    for rel in sorted(set(a) & set(b)):
        da, db = digest(a[rel]), digest(b[rel])
        if da != db:
            if isinstance(da, dict) and isinstance(db, dict):
                diff = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
                errors.append(f"{rel}: differs in {diff[:10]}")
            else:
                errors.append(f"{rel}: differs")
        else:
            print(f"  identical  {rel}")
    if not a:
        errors.append("no result files")
    return errors


def parse_jobs(text: str) -> list[dict]:
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        rec = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        jobs.append(rec)
    return jobs


def parse_task_env(text: str) -> dict[str, list[dict]]:
    steps: dict[str, list[dict]] = {}
    for line in text.splitlines():
        jobid, stepid, *kv = line.split()
        rec = dict(tok.split("=", 1) for tok in kv)
        rec["step"] = stepid
        steps.setdefault(jobid, []).append(rec)
    return steps


def rule_of(comment: str) -> str:
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def check_jobs(jobs: list[dict], task_env: dict[str, list[dict]], gpu: set[str],
               partition: str, expected_rules: set[str]) -> list[str]:
    errors = []
    seen = set()
    for job in jobs:
        jid, rule = job["JobId"], rule_of(job.get("Comment", ""))
        seen.add(rule)
        tres = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        alloc = job.get("JOB_GRES", "")  # allocated GRES (`scontrol -d`)
        steps = task_env.get(jid, [])
        cvd = sorted({s["CUDA_VISIBLE_DEVICES"] for s in steps})
        wants_gpu = rule in gpu
        print(f"  job {jid:>3} {rule:<22} gpu_rule={wants_gpu!s:<5} state={job.get('JobState')} "
              f"partition={job.get('Partition')} TresPerJob={tres or '-'} JOB_GRES={alloc} "
              f"steps={[s['step'] for s in steps]} CUDA_VISIBLE_DEVICES={cvd}")
        if job.get("JobState") != "COMPLETED" or job.get("ExitCode") != "0:0":
            errors.append(f"job {jid} ({rule}): {job.get('JobState')} {job.get('ExitCode')}")
        if job.get("Partition") != partition:
            errors.append(f"job {jid} ({rule}): partition {job.get('Partition')} != {partition}")
        if not any(s["step"] != "batch" for s in steps):
            errors.append(f"job {jid} ({rule}): no srun step recorded by the TaskProlog")
        if wants_gpu:
            if "gpu:1" not in tres or not alloc.startswith("gpu"):
                errors.append(f"job {jid} ({rule}) is a GPU rule but did not request/get "
                              f"a GPU: TresPerJob={tres!r} JOB_GRES={alloc!r}")
            if not steps or "unset" in cvd:
                errors.append(f"job {jid} ({rule}): a step started without "
                              f"CUDA_VISIBLE_DEVICES: {steps}")
        else:
            if "gpu" in tres or "gpu" in alloc:
                errors.append(f"job {jid} ({rule}) is a CPU rule but got a GPU: "
                              f"TresPerJob={tres!r} JOB_GRES={alloc!r}")
            if cvd != ["unset"] or any(s.get("SLURM_JOB_GPUS") for s in steps):
                errors.append(f"job {jid} ({rule}): a CPU job step saw a GPU: {steps}")
    if seen != expected_rules:
        errors.append(f"SLURM ran rules {sorted(seen)}, expected {sorted(expected_rules)}")
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=Path, required=True)
    ap.add_argument("--slurm", type=Path, required=True)
    ap.add_argument("--jobs", type=Path, required=True, help="`scontrol -d -o show job` output")
    ap.add_argument("--task-env", type=Path, required=True)
    ap.add_argument("--run-log", type=Path, required=True)
    ap.add_argument("--partition", required=True)
    args = ap.parse_args()

    expected = {"train_organism", "organism_prompts", "extract_activations", "build_masks"}
    gpu = gpu_rules(args.slurm)
    print(f"GPU rules declared in the workflow: {sorted(gpu)}")
    failures = []
    if not {"train_organism", "extract_activations"} <= gpu or gpu & {"organism_prompts",
                                                                      "build_masks"}:
        failures.append(f"unexpected GPU rule set {sorted(gpu)}")

    print("(a) results, local run vs SLURM run:")
    errs_a = compare_results(args.local, args.slurm)
    print("(b) SLURM jobs:")
    errs_b = check_jobs(parse_jobs(args.jobs.read_text()),
                        parse_task_env(args.task_env.read_text()), gpu, args.partition,
                        expected)
    # the jobs really ran through the executor plugin, not locally
    log = args.run_log.read_text()
    if "localrule" in log or "has been submitted with SLURM jobid" not in log:
        errs_b.append("the SLURM run log shows local execution or no submission")
    failures += errs_a + errs_b
    for e in failures:
        print(f"FAIL: {e}")
    passed = (not errs_a) + (not errs_b)
    print(f"slurm: {passed} passed, {2 - passed} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
