"""Sharded extraction in the DAG: N shard jobs + a gather job; a lost shard is the only
extraction job that reruns; the gathered store is what every reader sees."""

import re

import numpy as np
import pytest

from zhunt.data.store import ActivationStore
from zhunt.dryrun import scheduled_jobs

pytest.importorskip("snakemake")

SCALE_CONFIG = "tests/scale/config.yaml"
STORE = "results/organism-tiny/activations/organism.h5"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, copy_workflow, snakemake_cli):
    wd = copy_workflow(tmp_path_factory.mktemp("scale") / "wd")
    (wd / "tests" / "scale").mkdir(parents=True, exist_ok=True)
    (wd / SCALE_CONFIG).write_text((__import__("pathlib").Path(__file__).parent / "scale" / "config.yaml").read_text())
    cfgs = ("tests/tiny/config.yaml", SCALE_CONFIG)
    res = snakemake_cli(wd, STORE, configfiles=cfgs, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return wd, cfgs


def test_shards_gathered_into_one_store(sharded):
    wd, _ = sharded
    shards = sorted((wd / "results/organism-tiny/activations").glob("organism.shard*of2.h5"))
    assert [p.name for p in shards] == ["organism.shard0of2.h5", "organism.shard1of2.h5"]
    with ActivationStore(wd / STORE) as st:
        assert st.attrs["n_shards"] == 2 and st.dtype == "float16"
        # tiny study: layers 2, 3 (primary/secondary/phase2/ARD) -> indices 0 and 2, 3, 4
        assert st.stored_indices == [0, 2, 3, 4]
        parts = [ActivationStore(p) for p in shards]
        assert sum(len(p.prompts) for p in parts) == len(st.prompts)
        for p in parts:  # every shard prompt reads the same through the gathered store
            for pid, lang in zip(p.prompts["prompt_id"], p.prompts["lang"]):
                np.testing.assert_array_equal(p.tokens(pid, lang, 3), st.tokens(pid, lang, 3))
            p.close()
        assert np.isfinite(st.pooled(1)).all()  # pooled vectors of an index without rows


def test_killed_shard_is_the_only_extraction_job_that_reruns(sharded, snakemake_cli):
    wd, cfgs = sharded
    res = snakemake_cli(wd, "-n", STORE, configfiles=cfgs)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    # a shard job killed mid-run leaves no shard file (atomic write) and no gathered store
    act = wd / "results/organism-tiny/activations"
    (act / "organism.shard1of2.h5").unlink()
    (act / "organism.h5").unlink()
    res = snakemake_cli(wd, "-n", STORE, configfiles=cfgs)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert scheduled_jobs(out) == {"extract_activations_shard": 1, "gather_activations": 1}
    outputs = re.findall(r"^\s+output: (\S+)", out, re.M)
    assert sorted(outputs) == [f"{STORE}", "results/organism-tiny/activations/organism.shard1of2.h5"]


def test_qwen_shape_config_reaches_every_rule(tmp_path, copy_workflow, snakemake_cli):
    """tests/qwen-shape/config.yaml validates and its DAG holds every rule but the three its model
    source excludes by construction (random weights: no organism training; organism prompts: no MGSM;
    2 shards: no unsharded extraction), at the seed's layers and ARD layers.

    The dry run is made in a fresh copy of the workflow: in the checkout, outputs left by an earlier
    run (e.g. the model-independent ``results/theory``) would drop their rules from the DAG."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    wd = copy_workflow(tmp_path / "wd")
    shutil.copytree(root / "tests" / "qwen-shape", wd / "tests" / "qwen-shape")
    res = snakemake_cli(wd, "-n", configfiles=("tests/qwen-shape/config.yaml",), cores=1, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = scheduled_jobs(res.stdout)
    rules = {m.group(1) for f in (root / "workflow/rules").glob("*.smk")
             for m in re.finditer(r"^(?:rule|checkpoint) (\w+):", f.read_text(), re.M)}
    assert rules - set(jobs) == {"train_organism", "mgsm_prompts", "extract_activations"}, sorted(rules - set(jobs))
    assert jobs["ard_layer"] == 10 and jobs["extract_activations_shard"] == 2
    masks = sorted(int(m) for m in re.findall(r"results/qwen-shape/masks/L(\d+)\.h5", res.stdout))
    assert set(masks) == {10, 15, 20, 25, 28, 30, 32, 33, 34, 35}  # the ten ARD layers, 32 / 33 among them
