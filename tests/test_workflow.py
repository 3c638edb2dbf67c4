"""End-to-end: the Snakemake CLI on the tiny config, in a fresh copy of the workflow.

Checks that every output opens with the right shapes, that a second run has
nothing to do, and that changing one mask parameter reruns the masks and only
what depends on them.
"""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from zhunt.dryrun import scheduled_jobs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def snakemake(workdir, *args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tests/tiny/config.yaml",
         *args],
        cwd=workdir, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, clone_tiny):
    """A private copy of the session's tiny run (conftest `tiny_workdir`): the tests below
    rerun jobs and change outputs, which other modules must not see."""
    return clone_tiny(tmp_path_factory.mktemp("tiny-workflow") / "wd")


def test_outputs_open_with_right_shapes(workdir):
    from zhunt.models import get_adapter, load_model
    from zhunt.data.store import ActivationStore

    cfg = yaml.safe_load((workdir / "tests/tiny/config.yaml").read_text())
    train = cfg["models"]["organism-tiny"]["source"]["train"]
    model, tok = load_model(workdir / "resources/models/organism-tiny", device="cpu")
    ad = get_adapter(model)
    assert ad.num_layers == train["n_layers"] and ad.hidden_size == train["hidden_size"]

    st = ActivationStore(workdir / "results/organism-tiny/activations/organism.h5")
    assert st.num_layers == train["n_layers"] and st.hidden_size == train["hidden_size"]
    n = cfg["prompts"]["organism"]["n"]
    assert len(st.prompts) == 2 * n
    for lang in ("en", "zh"):
        assert st.pooled(1, lang).shape == (n, train["hidden_size"])

    for layer in (2, 3):
        with h5py.File(workdir / f"results/organism-tiny/masks/L{layer}.h5") as f:
            for kind in ("multihead", "head0"):
                for k in (4, 8):
                    V = f[kind][f"k{k}"][()]
                    assert V.shape == (k, train["hidden_size"])
                    np.testing.assert_allclose(V @ V.T, np.eye(k), atol=1e-8)
    import pandas as pd

    report = (workdir / "results/organism-tiny/organism/training_report.md").read_text()
    assert "| en |" in report and "| zh |" in report
    acc = pd.read_csv(workdir / "results/organism-tiny/organism/training_accuracy.tsv", sep="\t")
    assert acc.loc[acc["op"] == "all", "lang"].tolist() == ["en", "zh"]
    assert ((acc["exact_match"] >= 0) & (acc["exact_match"] <= 1)).all()

    structure = workdir / "results/organism-tiny/structure"
    erank = pd.read_csv(structure / "effective_rank.tsv", sep="\t")
    assert len(erank) == train["n_layers"]
    with h5py.File(structure / "grassmann.h5") as f:
        assert f["multihead"].shape == (train["n_layers"],) * 2
    bottleneck = pd.read_csv(structure / "bottleneck.tsv", sep="\t")
    assert 0 <= int(bottleneck["predicted_layer"].iloc[0]) < train["n_layers"]
    fam = pd.read_csv(structure / "families.tsv", sep="\t")
    assert len(fam) == 7 * (train["n_layers"] - 1)
    assert (structure / "organism-tiny-grams.json").exists()
    for verdict in ("families_verdict.tsv", "qk_verdict.tsv"):
        v = pd.read_csv(structure / verdict, sep="\t")
        assert v["criteria"].notna().all() and v["verdict"].notna().all(), verdict

    res = workdir / "results/organism-tiny"
    records = pd.read_csv(res / "behaviour/records.tsv", sep="\t")
    assert len(records) == 2 * n and set(records["lang"]) == {"en", "zh"}
    phase2 = pd.read_csv(res / "zspace/phase2.tsv", sep="\t")
    # (input, output = the tiny config's site variant, embedding reference) x token sets x layers x k x kinds x poolings
    assert len(phase2) == 3 * 2 * 2 * 2 * 2 * 2
    assert list(dict.fromkeys(phase2["site"])) == ["input", "output", "embedding"]
    p2in = phase2[phase2["site"] == "input"]
    assert (p2in["hidden_index"] == p2in["layer"]).all()
    for name in ("zspace/digit_confound.tsv", "theory/digit_confound.tsv"):
        digits = pd.read_csv(res / name, sep="\t")
        assert len(digits) > 0 and {"site", "hidden_index", "frac_both"} <= set(digits.columns), name
    patch = pd.read_csv(res / "patching/records.tsv", sep="\t")
    assert {"text", "extracted", "correct", "output_lang", "cjk_fraction", "condition"} <= set(patch.columns)
    assert len(list((res / "patching/tables").glob("*.md"))) == 2 * 1 * 2 * 2  # layers x k x alignments x sources
    assert "Verdict" in (res / "patching/verdict.md").read_text() or "verdict" in (
        res / "patching/verdict.md").read_text()
    cells = sorted((res / "patching/cells").glob("*.tsv"))
    assert len(cells) == 2 * 2 * 1 * 3  # sites (input + the output variant) x layers x k x (mean, ot, aligned), en<-zh
    sub = pd.read_csv(res / "patching/subspaces.tsv", sep="\t")
    assert {"site", "hidden_index", "n", "iia", "iia_lo", "iia_hi", "iia_value", "npe", "npe_lo", "npe_hi",
            "lang_keep", "lang_keep_lo", "lang_keep_hi", "p_vs_random_matched", "p_holm"} <= set(sub.columns)
    assert sub["primary"].sum() == sub["subspace"].nunique()  # one row per subspace, ms_ablation at primary_lam
    ms = sub[sub["subspace"] == "ms_ablation"]
    assert len(ms) == 12 * 2 and set(ms["lam"]) == {1.0, 2.0}  # every cell, tests/tiny's lam grid
    assert sub.loc[sub["subspace"] != "ms_ablation", "lam"].isna().all()
    assert set(sub["site"]) == {"input", "output"}
    offset = sub["site"].map({"input": 0, "output": 1})
    assert (sub["hidden_index"] == sub["layer"] + offset).all()
    assert "Primary cell" in (res / "patching/interchange_verdict.md").read_text()
    R = pd.read_csv(res / "decomposition/R.tsv", sep="\t")
    assert len(R) > 0
    assert set(R[R["lang"] == "all"]["pooled"]) == {"zh+en"} and R[R["lang"] == "zh-en"]["p_holm"].notna().all()
    assert (res / "theory/snr.tsv").exists() and (res / "theory/garch.tsv").exists()
    assert (workdir / "results/theory/toy_theorem.tsv").exists()
    ard = pd.read_csv(res / "ard/L2.tsv", sep="\t")
    assert len(ard) == 2 * 2 * 2 * 2 * 2  # sites x lambdas x inits x objectives x bases
    assert ard.groupby("site")["hidden_index"].first().to_dict() == {"input": 2, "output": 3}
    with h5py.File(res / "ard/L2.h5") as f:
        assert f["wellposed/coord/warm/lambda0.01/lengthscale"].shape == (train["hidden_size"],)
    assert len(pd.read_csv(res / "ard/heldout.tsv", sep="\t")) > 0
    head = pd.read_csv(res / "ard/headline.tsv", sep="\t")
    assert len(head) == 1 and 0 <= head["z_size"].iloc[0] <= train["hidden_size"]
    bridge = pd.read_csv(res / "bridge/bridge.tsv", sep="\t")
    assert len(bridge) > 0
    sweep = pd.read_csv(res / "layers/sweep.tsv", sep="\t")
    assert len(sweep) == train["n_layers"] * 2 and set(sweep["site"]) == {"input"}  # layers x poolings
    mean = sweep[sweep["pooling"] == "mean"]
    assert list(mean["hidden_index"]) == list(mean["layer"]) == list(range(train["n_layers"]))
    causal = pd.read_csv(res / "layers/causal.tsv", sep="\t")  # Exp. A's Z interchange at every layer
    assert list(causal["layer"]) == list(range(train["n_layers"]))
    assert (causal["iia"].isna() == (causal["n_iia"] == 0)).all()  # the tiny organism's runs may never diverge
    assert causal["iia"].dropna().between(0, 1).all()
    das = pd.read_csv(res / "layers/das.tsv", sep="\t")  # DAS next to Z: layers 0, 2 (every 2) and 1, 2, 3
    predicted = int(pd.read_csv(res / "structure/bottleneck.tsv", sep="\t")["predicted_layer"].iloc[0])
    das_layers = sorted({0, 2, 3, predicted})  # primary 2, secondary 3
    assert list(das["layer"]) == [l for l in das_layers for _ in (0, 1)]
    assert list(das["subspace"]) == ["z", "das"] * len(das_layers) and (das["split"] == "heldout").all()
    assert das["iia"].dropna().between(0, 1).all()
    comp = pd.read_csv(res / "layers/comparison.tsv", sep="\t")
    assert set(comp["verdict"]) == {"too few layers"}  # 4 layers: the shift null cannot reach 0.05
    assert {"iia_z", "npe_z", "iia_das", "npe_das"} <= set(comp["data_score"])
    layer_pred = pd.read_csv(workdir / "results/summary/layer_prediction.tsv", sep="\t")
    assert list(layer_pred["model"])[:1] == ["organism-tiny"] and layer_pred["reference"].iloc[-1]
    for fig in ("effective_rank", "grassmann_heatmap", "ffn_alignment", "phases",
                "families_by_phase", "qk_cos_heatmap", "phase2_heatmap", "datadriven_angles", "snr",
                "nn_accuracy", "contrib_gram", "crossmap", "behaviour_accuracy", "decomposition_R",
                "garch_beta", "ard_z_size", "ard_spectrum", "ard_trajectories", "bridge_spectra",
                "bridge_loo_r2", "bridge_null", "patching_interchange", "layer_profiles"):
        for ext in ("pdf", "png"):
            assert (workdir / f"results/organism-tiny/figures/{fig}.{ext}").stat().st_size > 0


def test_second_run_has_nothing_to_do(workdir):
    res = snakemake(workdir, "-n")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Nothing to be done" in res.stdout + res.stderr


def test_changing_a_mask_parameter_reruns_only_masks(workdir):
    cfg_path = workdir / "tests/tiny/config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["models"]["organism-tiny"]["study"]["phase2_k"] = [4, 6]
    changed = workdir / "tests/tiny/changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", str(changed)],
        cwd=workdir, capture_output=True, text=True, timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = scheduled_jobs(res.stdout)
    assert jobs.get("build_masks") == 2, res.stdout
    # the masks and what consumes them rerun; nothing upstream or mask-independent does
    upstream = {"train_organism", "organism_prompts", "extract_activations", "structure",
                "weight_families", "qk_operators", "theory", "toy_theorem", "behaviour", "garch"}
    assert not set(jobs) & upstream, jobs
    assert {"phase2", "datadriven_z"} <= set(jobs), jobs
    assert "layer_sweep" not in jobs, jobs  # its k is the largest patch_k, unchanged


def _run_with(workdir, edit, *targets):
    cfg = yaml.safe_load((workdir / "tests/tiny/config.yaml").read_text())
    edit(cfg)
    path = workdir / "tests/tiny/edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, "--cores", "1", "--configfile", str(path)],
        cwd=workdir, capture_output=True, text=True, timeout=1200,
    )


def test_layer_out_of_range_is_one_clear_line(workdir):
    res = _run_with(workdir, lambda c: None, "results/organism-tiny/masks/L7.h5")
    assert res.returncode != 0
    assert "zhunt error: models.organism-tiny.study: layer 7 out of range" in res.stderr
    assert not (workdir / "results/organism-tiny/masks/L7.h5").exists()
    assert not list((workdir / "results/organism-tiny/masks").glob(".L7*"))


def test_k_not_below_d_is_one_clear_line(workdir):
    def edit(c):
        c["models"]["organism-tiny"]["study"]["phase2_k"] = [4, 64]
        c["models"]["organism-tiny"]["study"]["mask_kinds"] = ["multihead"]

    res = _run_with(workdir, edit, "results/organism-tiny/masks/L0.h5")
    assert res.returncode != 0
    assert "k=64 must be < d=64" in res.stderr
    assert not (workdir / "results/organism-tiny/masks/L0.h5").exists()


def test_layer_auto_uses_the_predicted_bottleneck(workdir):
    import pandas as pd

    def edit(c):
        c["models"]["organism-tiny"]["study"].update(
            primary_layer="auto", phase2_layers=[1], ard={"layers": [1]})

    predicted = int(pd.read_csv(workdir / "results/organism-tiny/structure/bottleneck.tsv",
                                sep="\t")["predicted_layer"].iloc[0])
    # Exp. B's basis is the primary layer's Z: building its table alone resolves `auto` through
    # the structure checkpoint (the whole DAG would rerun every Exp. A cell at the new layer)
    res = _run_with(workdir, edit, "results/organism-tiny/decomposition/R.tsv")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (workdir / f"results/organism-tiny/masks/L{predicted}.h5").exists()
    R = pd.read_csv(workdir / "results/organism-tiny/decomposition/R.tsv", sep="\t")
    assert set(R["basis_layer"]) == {predicted}
