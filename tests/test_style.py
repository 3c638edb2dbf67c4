"""Workflow style gates: `snakemake --lint` has no findings, snakefmt changes nothing,
and GPU tagging is declared exactly on the rules that run a model forward/backward."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_RULES = {"train_organism", "extract_activations", "extract_activations_shard", "behaviour", "patching",
             "patching_cell", "patching_das", "layer_causal", "ard_layer", "ard_heldout"}


def test_snakemake_lint_clean():
    res = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Congratulations, your workflow is in a good condition" in res.stdout + res.stderr


def test_snakefmt_clean():
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def _rules():
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, re.S | re.M):
            yield m.group(1), m.group(2)


def test_gpu_tagging():
    rules = dict(_rules())
    tagged = {name for name, body in rules.items() if re.search(r"^\s+gpu=1,$", body, re.M)}
    assert tagged == GPU_RULES
    for name, body in rules.items():
        assert re.search(r"^    log:", body, re.M), f"rule {name} has no log:"
        assert re.search(r"^    conda:", body, re.M), f"rule {name} has no conda:"
