"""The report: the seed-000 checklist logic on synthetic TSVs, partial rebuilds of one figure,
and `snakemake --report` on the tiny run (captions carry the measured values)."""

import zipfile
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from zhunt.dryrun import scheduled_jobs

from zhunt.report.summary import checklist, headline, measured, model_files, model_page

MODEL = "m"


# --------------------------------------------------------------------------- synthetic TSVs


def _metrics(n_problems=20, layers=(3, 4), alignments=("mean", "ot"), verdicts=None):
    rows = []
    for layer in layers:
        for k in (8, 16):
            for alignment in alignments:
                for source in ("same", "donor"):
                    rows.append(dict(
                        source=source, layer=layer, k=k, alignment=alignment, direction="en<-zh",
                        primary=(layer, k, alignment) == (layers[0], 16, alignments[0]),
                        n_problems=n_problems, z_answer_change=0.4, zperp_answer_change=0.1,
                        z_language_preservation=0.9, zperp_language_disruption=0.6, random_answer_change=0.05,
                        verdict=(verdicts or {}).get(layer, "partial success")))
    return pd.DataFrame(rows)


def _tree(root: Path, *, metrics=None, R_labels=("mixed", "Z-dominated", "mixed"), orth_err=0.05):
    base = root / MODEL
    for sub in ("patching/tables", "decomposition", "ard", "bridge", "figures", "structure", "behaviour"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    m = _metrics() if metrics is None else metrics
    m.to_csv(base / "patching/metrics.tsv", sep="\t", index=False)
    first = m.iloc[0]
    n = int(first["n_problems"])
    pd.DataFrame({"Problem": [f"p{i}" for i in range(n)], "answer: none": 1, "answer: z": 2}).to_csv(
        base / f"patching/tables/table_L{first['layer']}_k16_{first['alignment']}_en-from-zh.tsv", sep="\t",
        index=False)
    pd.DataFrame([dict(k=16, layer=i, lang="all", R=0.5 + i, enrichment=2.0, label=lab, R_gt_1=i > 0)
                  for i, lab in enumerate(R_labels)]).to_csv(base / "decomposition/R.tsv", sep="\t", index=False)
    pd.DataFrame([dict(layer=3, objective="wellposed", init="cold", basis="coord", **{"lambda": 0.01},
                       n_active_median=30, z_size_median=30, d=128, ashman_d=3.0, bic_gain=10.0,
                       overlap_svd=0.7, overlap_chance=0.2, overlap_p=0.001, growth_per_100_steps=0.0,
                       frac_grown=0.1)]).to_csv(base / "ard/summary.tsv", sep="\t", index=False)
    pd.DataFrame([dict(layer=3, z_size=30)]).to_csv(base / "ard/headline.tsv", sep="\t", index=False)
    pd.DataFrame([dict(layer=3, k=16, direction="zh->en", level="pooled", estimator=est, r2_in=0.95, r2_loo=0.9,
                       orth_err=orth_err, r2_loo_null_q95=0.1, p_loo=0.01, kappa=2.0)
                  for est in ("lstsq", "procrustes")]).to_csv(base / "bridge/bridge.tsv", sep="\t", index=False)
    for fig in ("decomposition_R", "ard_spectrum", "bridge_spectra"):
        (base / f"figures/{fig}.png").write_bytes(b"png")
    return root


def test_seed_grid_headline_is_the_primary_configuration_not_the_strongest(tmp_path):
    """The seed grid's headline is its pre-registered primary configuration; the seed's strongest-of-N
    rule (uncalibrated: 7 % false positives at 8 configurations) is only shown beside it."""
    from zhunt.report.patching_grid import verdict_markdown

    m = _metrics(verdicts={3: "null", 4: "partial success"})
    m = m[m["source"] == "same"].assign(criteria="(criteria)")
    for c in ("z_answer_change", "zperp_answer_change", "z_language_preservation", "zperp_language_disruption",
              "random_answer_change"):
        m[c + "_lo"], m[c + "_hi"] = m[c], m[c]
    text, by = verdict_markdown(m, {"layers": [3, 4], "sources": ["same"]}, MODEL)
    assert by["same"]["overall"] == "null" and by["same"]["strongest"] == "partial success"
    assert "**Headline, the pre-registered primary configuration (L3, k=16, mean" in text
    assert "): null**" in text and "not corrected for their number): partial success" in text


def _ok(checks):
    return {c.item: c.ok for c in checks}


def test_checklist_all_met_on_synthetic_tsvs(tmp_path):
    root = _tree(tmp_path / "results")
    files = model_files(root, MODEL)
    checks = checklist(files)
    assert [c.tier for c in checks].count("minimum") == 3
    assert all(_ok(checks).values()), [(c.item, c.evidence) for c in checks if not c.ok]
    sentence = measured("patching", MODEL, root)
    assert "Z-patching changes answers 40% of the time while preserving language 90% of the time" in sentence
    assert "Z⊥-patching which changes answers 10% and disrupts language 60%" in sentence
    assert "pre-registered): partial success (strongest of" in sentence
    page = model_page(files, MODEL, checks, headline(files, MODEL), href=lambda p: f"#{p}")
    assert page.count("✅") == len(checks) and "❌" not in page
    assert f'href="#{root}/{MODEL}/figures/decomposition_R.png"' in page
    assert f"on the TSVs of <code>{root}/{MODEL}/</code>" in page


@pytest.mark.parametrize("case, failing", [
    (dict(metrics=_metrics(n_problems=10)), "Patching table filled in for ≥ 15 problems"),
    (dict(metrics=_metrics(verdicts={4: "null"})), "Results hold at both patching layers"),
    (dict(metrics=_metrics(alignments=("mean",))), "OT-aligned patching tried"),
    (dict(R_labels=("mixed", "mixed", "Z-dominated")), "R(k) reveals encode / reason / decode phases"),
    (dict(orth_err=0.5), "Bridge approximately orthogonal"),
])
def test_checklist_flags_the_one_unmet_item(tmp_path, case, failing):
    ok = _ok(checklist(model_files(_tree(tmp_path / "results", **case), MODEL)))
    assert [item for item, v in ok.items() if not v] == [failing]


def test_missing_inputs_read_not_available(tmp_path):
    root = _tree(tmp_path / "results")
    (root / MODEL / "bridge/bridge.tsv").unlink()
    assert measured("bridge", MODEL, root).startswith("not available: ")
    assert not _ok(checklist(model_files(root, MODEL)))["Bridge R² exists"]
    assert measured("ard_layer", MODEL, root, SimpleNamespace(layer=9)).startswith("not available: ")


def _inputs(root: Path) -> dict:
    """The summary rule's named inputs for the synthetic tree (every file the page may read)."""
    from zhunt.report.summary import FIGURES

    files = model_files(root, MODEL)
    inputs = {k: str(v) for k, v in files.items() if k != "figures"}
    inputs["figures"] = [str(root / MODEL / "figures" / f"{name}.png") for name in FIGURES]
    return inputs


def test_summary_stage_writes_its_outputs(tmp_path):
    import json

    from zhunt.stages.summary import run_summary

    root = _tree(tmp_path / "results")
    out = {"html": str(tmp_path / "o" / "summary.html"), "json": str(tmp_path / "o" / "summary.json"),
           "checklist": str(tmp_path / "o" / "checklist.tsv")}
    run_summary(_inputs(root), {}, out, wildcards={"model": MODEL}, href=lambda p: f"#{p}")
    head = json.loads(Path(out["json"]).read_text(encoding="utf-8"))
    assert head["model"] == MODEL and head["tiers"] == {"minimum": "3/3", "strong": "3/3", "transformative": "4/4"}
    assert head["patching_primary"] == "L3, k=16, mean, en<-zh" and head["ard_layer"] == 3
    checks = pd.read_csv(out["checklist"], sep="\t")
    assert checks["ok"].tolist() == [True] * 10
    assert checks["artifact"].iloc[0] == str(root / MODEL / "patching/tables/table_L3_k16_mean_en-from-zh.tsv")
    page = Path(out["html"]).read_text(encoding="utf-8")
    assert "<title>zhunt summary: m</title>" in page and page.count("✅") == 10


def test_models_summary_links_the_pages_it_is_given(tmp_path):
    import json

    from zhunt.stages.summary import run_models_summary

    heads = []
    for name in ("a", "b"):
        heads.append(tmp_path / f"{name}.json")
        heads[-1].write_text(json.dumps({"model": name, "tiers": {"minimum": "1/3"}}), encoding="utf-8")
    pages = [f"pages/{name}.html" for name in ("a", "b")]
    out = {"html": str(tmp_path / "models.html"), "table": str(tmp_path / "models.tsv")}
    run_models_summary({"heads": [str(h) for h in heads], "pages": pages}, {}, out, href=lambda p: f"#{p}")
    html = Path(out["html"]).read_text(encoding="utf-8")
    assert '<a href="#pages/a.html"' in html and '<a href="#pages/b.html"' in html
    assert "seed 000 / 001 (quoted)" in html
    assert pd.read_csv(out["table"], sep="\t")["model"].tolist() == ["a", "b", "Qwen2.5-3B (seed, quoted)"]


# --------------------------------------------------------------------------- the workflow

FIGURE = "results/organism-tiny/figures/decomposition_R.pdf"


@pytest.mark.slow
def test_one_figure_from_scratch_schedules_only_its_inputs(tmp_path, copy_workflow, snakemake_cli):
    wd = copy_workflow(tmp_path / "wd")
    res = snakemake_cli(wd, "-n", FIGURE)
    assert res.returncode == 0, res.stderr[-2000:]
    assert scheduled_jobs(res.stdout) == {"train_organism": 1, "organism_prompts": 1, "extract_activations": 1,
                                          "build_masks": 1, "decomposition": 1}, res.stdout[-3000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory, clone_tiny):
    return clone_tiny(tmp_path_factory.mktemp("tiny-report") / "wd")


@pytest.mark.slow
def test_forced_figure_reruns_only_its_rule(built, snakemake_cli):
    res = snakemake_cli(built, "-n", "--force", FIGURE)
    assert res.returncode == 0, res.stderr[-2000:]
    assert scheduled_jobs(res.stdout) == {"decomposition": 1}, res.stdout[-3000:]


@pytest.mark.slow
def test_report_builds_with_measured_captions(built, snakemake_cli):
    summary = (built / "results/organism-tiny/summary/summary.html").read_text()
    assert "✅" in summary and "Z-patching changes answers" in summary
    res = snakemake_cli(built, "--report", "report.zip", cores=1)
    assert res.returncode == 0, res.stderr[-3000:]
    with zipfile.ZipFile(built / "report.zip") as z:
        names = z.namelist()
        html = z.read(next(n for n in names if n.endswith("/report.html"))).decode()
    assert any(n.endswith("/summary.html") for n in names) and any(n.endswith("/models.html") for n in names)
    assert any(n.endswith("/decomposition_R.png") for n in names)
    assert not any(n.endswith("/decomposition_R.pdf") for n in names)  # PNGs only
    assert "Measured (organism-tiny).</strong> k=" in html  # R(k) caption, value from R.tsv
    # summary.measured's failure text ("not available: <reason>"; the bare words occur in the bundled
    # JavaScript) and docutils' error boxes (a caption's |x| is an RST substitution unless escaped)
    assert "not available:" not in html and "System Message" not in html
    res = snakemake_cli(built, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


def test_summary_reads_the_interchange_verdict_the_gather_gives(tmp_path):
    """The summary's Exp. A label is judge_interchange's, ceiling included: a primary cell whose
    aligned full interchange does not move the answer is `untestable` on both pages."""
    import numpy as np

    from zhunt.experiments.patching_metrics import subspace_metrics
    from zhunt.report.patching_render import judge_interchange
    from zhunt.report.summary import MEASURES, _interchange

    rng = np.random.default_rng(0)
    rows = []
    for name, p, e in (("z", 0.8, 0.8), ("random_matched", 0.3, 0.1)):
        hits, npe = rng.random(60) < p, rng.normal(e, 0.3, 60)
        rows += [{"pair": i, "subspace": name, "first_differs": True, "iia_hit": bool(hits[i]), "value_differs": True,
                  "value_hit": bool(hits[i]), "true_hit": False, "npe": npe[i], "ld_seq": 0.0, "lang_effect": 0.0,
                  "answer_lang": "en", "base_answer_lang": "en", "dh_norm": 1.0} for i in range(60)]
    m = subspace_metrics(pd.DataFrame(rows))
    key = {"site": "input", "layer": 3, "k": 16, "direction": "en<-zh", "source": "donor", "lam": np.nan}
    prim = m.assign(**key, alignment="mean", primary=True)
    for ceiling, want in ((0.1, "untestable"), (1.0, "causal")):
        full = pd.DataFrame([{**key, "alignment": "aligned", "subspace": "full", "primary": False, "iia": ceiling,
                              "iia_lo": 0.0, "iia_hi": 1.0, "npe": 1.0, "npe_lo": 1.0, "npe_hi": 1.0, "n_iia": 60}])
        t = pd.concat([prim, full], ignore_index=True)
        path = tmp_path / f"subspaces_{ceiling}.tsv"
        t.to_csv(path, sep="\t", index=False)
        assert judge_interchange(t, "primary")["verdict"] == want
        assert _interchange({"subspaces": path})[1]["verdict"] == want
        assert MEASURES["patching_interchange"]({"subspaces": path}, None).split("): ")[1].startswith(want + ";")


def test_measures_read_verdicts_and_accuracy_from_tsvs(tmp_path):
    """The families / QK verdicts and the organism's accuracy come from their TSVs, not from Markdown."""
    from zhunt.report.summary import measured

    base = tmp_path / "results" / "m"
    (base / "structure").mkdir(parents=True)
    (base / "organism").mkdir()
    pd.DataFrame([{"family": f, "verdict": "neither"} for f in ("attn_qk", "ffn")]).to_csv(
        base / "structure/families_verdict.tsv", sep="\t", index=False)
    pd.DataFrame([{"verdict": "WEAK", "mean_cos_to_anchor_excl": 0.123456, "mean_cos_to_anchor_incl": 0.3}]).to_csv(
        base / "structure/qk_verdict.tsv", sep="\t", index=False)
    pd.DataFrame({"lang": ["en", "zh", "en"], "op": ["all", "all", "plus"], "exact_match": [0.97, 0.955, 0.5]}).to_csv(
        base / "organism/training_accuracy.tsv", sep="\t", index=False)
    root = tmp_path / "results"
    assert measured("families", "m", root) == "verdict: neither"
    assert measured("qk", "m", root) == "verdict: WEAK; mean operator cosine to the anchor (anchor excluded) +0.1235"
    assert measured("training", "m", root) == "held-out exact match en 97.0%, zh 95.5%"
    (base / "structure/families_verdict.md").write_text("**Verdict: training-artifact**\n")  # never read
    assert measured("families", "m", root) == "verdict: neither"
    pd.DataFrame({"family": ["x"]}).to_csv(base / "structure/families_verdict.tsv", sep="\t", index=False)
    assert measured("families", "m", root).startswith("not available: ") and "no verdict" in measured("families", "m", root)
