"""config.yaml and the tiny config validate; semantic errors are one clear line."""

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "tests/tiny/config.yaml"])
def test_configs_validate(path):
    jsonschema.validate(yaml.safe_load((ROOT / path).read_text()), SCHEMA)


def test_seed_parameters_for_qwen():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    st = cfg["study"]
    assert (st["primary_layer"], st["secondary_layer"]) == (32, 33)
    assert st["patch_k"] == [20, 50] and 78 in st["phase2_k"]
    assert st["ard"]["layers"] == [10, 15, 20, 25, 28, 30, 32, 33, 34, 35]
    assert st["ard"]["lambdas"] == [0.001, 0.01, 0.1] and st["ard"]["lr"] == 0.01
    assert (st["ard"]["min_steps"], st["ard"]["max_steps"]) == (500, 1000)
    assert st["generation"]["max_new_tokens"] <= 100
    assert cfg["models"]["qwen2.5-3b"]["source"]["repo"] == "Qwen/Qwen2.5-3B"
    assert cfg["models"]["qwen2.5-3b"]["source"]["trust_remote_code"] is False


def test_every_key_is_described_or_typed():
    def walk(node, path):
        if isinstance(node, dict) and "properties" in node:
            for key, sub in node["properties"].items():
                assert "description" in sub or "$ref" in sub or "type" in sub or "enum" in sub, (
                    f"{path}.{key}")
                walk(sub, f"{path}.{key}")

    walk(SCHEMA, "config")


def _dry_run(tmp_path, config_text):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(cfg),
         "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT)],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "override, needle",
    [
        ("analyze: [nosuchmodel]\n", "analyze[0]: unknown model name 'nosuchmodel'"),
        ("study: {ard: {lambdas: [0.0]}}\n", "lambdas"),
        ("study: {ard: {lambdas: []}}\n", "lambdas"),
        ("study: {patch_k: [0]}\n", "patch_k"),
        ("models: {x: {source: {kind: hub, repo: a/b}, architecture: gpt2}}\n", "architecture"),
        ("models: {organism: {source: {kind: organism}, architecture: qwen2, batch_size: 0}}\n",
         "models.organism.batch_size"),
        ("study: {patching: {das: {batch_size: 0}}}\n", "das.batch_size"),
    ],
)
def test_bad_config_one_line(tmp_path, override, needle):
    res = _dry_run(tmp_path, override)
    assert res.returncode != 0
    assert needle in res.stderr, res.stderr[-2000:]


def test_extraction_prompts_follow_the_promptset_wildcard():
    """The store of prompt set P reads P's file (whose languages label its rows), whatever the
    model's own prompt set; a generated set of a model that cannot have one is refused in one line."""
    from snakemake.utils import validate

    from zhunt.config import promptset_file
    from zhunt.errors import ZhuntError

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["prompts"]["mgsm"] = {"path": "data/mgsm", "format": "mgsm"}
    validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
    math_path = cfg["prompts"]["math"]["path"]
    assert cfg["models"]["gemma3-270m"]["promptset"] == "math"
    assert promptset_file(cfg, "gemma3-270m") == math_path
    assert promptset_file(cfg, "gemma3-270m", "math") == math_path
    assert promptset_file(cfg, "gemma3-270m", "mgsm") == "results/prompts/mgsm.tsv"
    assert promptset_file(cfg, "organism", "organism") == "results/organism/prompts/organism.tsv"
    assert promptset_file(cfg, "organism", "math") == math_path  # not the organism's own file
    with pytest.raises(ZhuntError, match=r"^prompts.organism: a generated prompt set exists only for an organism "
                                         r".*; gemma3-270m is of source kind 'gguf_package'$"):
        promptset_file(cfg, "gemma3-270m", "organism")
