"""Style gates: `snakemake --lint` has no findings, snakefmt changes nothing, GPU tagging is
declared exactly on the rules that run a model forward/backward, and the package's imports run in
the order of docs/architecture.md (the science never reaches up into report/ or stages/)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_RULES = {"train_organism", "extract_activations", "extract_activations_shard", "behaviour", "patching",
             "patching_cell", "patching_das", "layer_causal", "layer_das", "ard_layer", "ard_heldout"}


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


# --------------------------------------------------------------------------- the package's layers
PACKAGE = ROOT / "src" / "zhunt"
#: The layers of docs/architecture.md, bottom up: a module may import its own layer and those below.
#: ``calibration`` (every verdict's null and planted inputs) sits on top: no package module imports it.
LAYERS = ("core", "models", "data", "weights", "activations", "experiments", "report", "stages", "calibration")
#: The upward imports docs/architecture.md lists ("the imports that still run upwards"), as
#: (importing module, imported module).
UPWARD = {
    ("zhunt.models.organism", "zhunt.data.number_words"), ("zhunt.models.organism", "zhunt.data.prompts"),
    ("zhunt.config", "zhunt.data.prompts"), ("zhunt.config", "zhunt.models.organism"),
    ("zhunt.io", "zhunt.data.store"), ("zhunt.io", "zhunt.weights.masks"), ("zhunt.io", "zhunt.data.prompts"),
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def _imports():
    """``(module, imported zhunt module)`` for every import of the package, lazy ones included."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "zhunt":
                names = ([f"zhunt.{a.name}" for a in node.names] if node.module == "zhunt" else [node.module])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "zhunt"]
            else:
                continue
            for name in names:
                yield module, name


def test_science_never_imports_report_or_stages():
    """models/, data/, weights/, activations/ and experiments/ compute; only stages/ reads and writes
    the rule's files and only report/ renders: none of them imports either."""
    science = {"models", "data", "weights", "activations", "experiments"}
    bad = [(m, n) for m, n in _imports() if _layer(m) in science and _layer(n) in {"report", "stages"}]
    assert bad == []


def test_imports_run_downwards_but_the_listed_ones():
    """Every import goes to the same or a lower layer, except the ones docs/architecture.md lists."""
    up = {(m, n) for m, n in _imports() if LAYERS.index(_layer(n)) > LAYERS.index(_layer(m))}
    assert up == UPWARD
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for m, n in UPWARD:
        assert f"`{m.removeprefix('zhunt.')}`" in doc and f"`{n.removeprefix('zhunt.')}`" in doc, (m, n)


def test_activations_touch_no_files():
    """The analyses of stored hidden states take the open store or arrays: no file I/O, no drawing."""
    for path in sorted((PACKAGE / "activations").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                assert name.split(".")[0] not in {"h5py", "matplotlib"} and name != "zhunt.io", (path.name, name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in {
                    "open", "read_csv", "to_csv", "ActivationStore", "write_text", "read_text"}:
                raise AssertionError(f"{path.name}:{node.lineno} touches a file")
