"""Tests for zhunt.experiments.behaviour (Phase 0): scoring, contingency bands, paired test, per-step distances, stage."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zhunt.errors import ZhuntError
from zhunt.experiments import behaviour as B
from zhunt.stages.behaviour import run_behaviour

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "resources" / "prompts" / "templates.yaml"
FEWSHOT = ROOT / "resources" / "prompts" / "fewshot.tsv"


@pytest.mark.parametrize("diff,band", [(5, "zh advantage"), (3, "zh advantage"), (2, "small zh edge"),
                                       (1, "equal"), (0, "equal"), (-1, "equal"), (-2, "en advantage"),
                                       (-7, "en advantage")])
def test_contingency_bands(diff, band):
    assert B.contingency_band(diff) == band
    assert B.contingency_band(diff, "es").replace("es", "zh") == band


def records(correct_en, correct_zh):
    rows = []
    for i, (ce, cz) in enumerate(zip(correct_en, correct_zh)):
        for lang, c, out in (("en", ce, " seven"), ("zh", cz, "七")):
            rows.append({"id": f"p{i}", "lang": lang, "correct": bool(c), "extracted": 7 if c else pd.NA,
                         "output_lang": "zh" if lang == "zh" else "en", "cjk_fraction": 1.0 if lang == "zh" else 0.0,
                         "output": out})
    df = pd.DataFrame(rows)
    df["extracted"] = df["extracted"].astype("Int64")
    return df


def test_summary_paired_comparison():
    en = [1] * 10 + [0] * 10
    zh = [1] * 10 + [1] * 5 + [0] * 5  # zh solves 5 more, never fewer
    s = B.summarize_behaviour(records(en, zh), ["en", "zh"]).set_index("lang")
    assert s.loc["en", "accuracy"] == 0.5 and s.loc["zh", "accuracy"] == 0.75
    assert s.loc["en", "ci_lo"] <= 0.5 <= s.loc["en", "ci_hi"]
    assert s.loc["zh", "diff_vs_en"] == 5 and s.loc["zh", "band"] == "zh advantage"
    assert s.loc["zh", "n_only_lang"] == 5 and s.loc["zh", "n_only_en"] == 0
    assert s.loc["zh", "mcnemar_p"] == pytest.approx(0.0625)  # 2 * 0.5**5
    assert s.loc["en", "n_no_answer"] == 10
    assert s.loc["zh", "on_language_rate"] == 1.0
    assert pd.isna(s.loc["en", "band"])


def test_paired_comparison_needs_every_problem_in_both_languages():
    """The zh-en comparison pairs by problem (zhunt.data.pairing): a problem without its en record is an
    error naming it, not a smaller N."""
    rec = records([1, 0, 1, 1], [1, 1, 1, 0])
    rec = rec[~((rec["id"] == "p2") & (rec["lang"] == "en"))]
    with pytest.raises(ZhuntError, match=r"^prompts\.tsv: problem 'p2' has a 'zh' prompt but no 'en' prompt"):
        B.summarize_behaviour(rec, ["en", "zh"], where="prompts.tsv")
    # the pairing is by id, not by row order: shuffled records give the same comparison
    full = records([1, 0, 1, 1, 0], [1, 1, 1, 0, 1])
    a = B.summarize_behaviour(full, ["en", "zh"]).set_index("lang")
    b = B.summarize_behaviour(full.sample(frac=1, random_state=3), ["en", "zh"]).set_index("lang")
    assert a.loc["zh", "n_paired"] == 5 and a.loc["zh", "diff_vs_en"] == 1
    assert (a.loc["zh", ["n_only_lang", "n_only_en"]].tolist() == b.loc["zh", ["n_only_lang", "n_only_en"]].tolist()
            == [2, 1])
    assert a.loc["zh", "mcnemar_p"] == b.loc["zh", "mcnemar_p"] == pytest.approx(1.0)


def test_step_distances_need_both_languages():
    long = pd.DataFrame({"id": ["a", "a", "b"], "lang": ["en", "zh", "zh"]})
    gens = [{"states": {B.STEP_INPUT: np.zeros((2, 3)), B.STEP_OUTPUT: np.ones((2, 3))}}] * 3
    with pytest.raises(ZhuntError, match=r"problem 'b' has a 'zh' prompt but no 'en' prompt"):
        B.step_distances(long, gens, where="prompts.tsv")


def test_step_distances():
    long = pd.DataFrame({"id": ["a", "a", "b", "b"], "lang": ["en", "zh", "en", "zh"]})
    rng = np.random.default_rng(0)
    gens = [{"states": {B.STEP_INPUT: rng.normal(size=(n, 4)), B.STEP_OUTPUT: rng.normal(size=(n, 4))}}
            for n in (3, 5, 2, 2)]
    df = B.step_distances(long, gens)
    assert list(df["problem"]) == ["a"] * 3 + ["b"] * 2
    assert list(df["step"]) == [0, 1, 2, 0, 1]
    zh, en = gens[1]["states"], gens[0]["states"]
    upd = lambda s: s[B.STEP_OUTPUT][:3] - s[B.STEP_INPUT][:3]  # noqa: E731
    np.testing.assert_allclose(df["y"][:3], ((upd(zh) - upd(en)) ** 2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(df["y_output"][:3], ((zh[B.STEP_OUTPUT][:3] - en[B.STEP_OUTPUT]) ** 2).sum(1),
                               rtol=1e-12)
    assert list(df.columns) == ["problem", "step", "y", "y_output", "T_zh", "T_en"]
    assert df["T_zh"].iloc[0] == 5 and df["T_en"].iloc[0] == 3
    with pytest.raises(ZhuntError, match="language 'zh' has no prompts"):  # no pair: an error, not an empty table
        B.step_distances(long.iloc[:1], gens[:1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_organism):
    from zhunt.models import organism

    root = tmp_path_factory.mktemp("behav")
    (root / "model").symlink_to(tiny_organism[0], target_is_directory=True)
    organism.make_organism_prompt_table(root / "prompts.tsv", n=5, seed=2)
    return root


def _behaviour(model, out, *, family="organism", fewshot=None, n_shots=0, max_new_tokens=5, batch_size=4,
               step_layer=None, steps=True):
    """The behaviour stage on ``tiny/prompts.tsv`` (en, zh), outputs in ``out``."""
    outputs = {"records": str(out / "records.tsv"), "summary": [str(out / "summary.tsv"), str(out / "summary.md")],
               "fig": [str(out / "acc.pdf"), str(out / "acc.png")]}
    if steps:
        outputs["steps"] = str(out / "steps.tsv")
    inputs = {"model": str(model), "prompts": str(model.parent / "prompts.tsv"), "templates": str(TEMPLATES)}
    if fewshot is not None:
        inputs["fewshot"] = str(fewshot)
    params = {"languages": ["en", "zh"], "runtime": {"template": family}, "batch_size": batch_size,
              "generation": {"n_shots": n_shots, "max_new_tokens": max_new_tokens}, "step_layer": step_layer}
    run_behaviour(inputs, params, outputs, wildcards={"model": "organism"})


def test_run_behaviour_stage(tiny, tmp_path):
    out = tmp_path / "o"
    _behaviour(tiny / "model", out, step_layer=1)
    rec = pd.read_csv(out / "records.tsv", sep="\t")
    assert len(rec) == 10 and set(rec["lang"]) == {"en", "zh"}
    assert {"output", "extracted", "correct", "output_lang", "cjk_fraction"} <= set(rec.columns)
    summ = pd.read_csv(out / "summary.tsv", sep="\t")
    assert list(summ["lang"]) == ["en", "zh"]
    zh = summ.set_index("lang").loc["zh"]
    assert zh["band"] == B.contingency_band(int(zh["diff_vs_en"]))
    assert (out / "acc.pdf").is_file() and (out / "acc.png").is_file()
    md = (out / "summary.md").read_text()
    assert "diff >= 3" in md and "|diff| <= 1" in md and "diff <= -2" in md and "diff == 2" in md
    steps = pd.read_csv(out / "steps.tsv", sep="\t")
    assert set(steps["problem"]) <= set(rec["id"]) and (steps["y"] >= 0).all()
    assert (steps.groupby("problem")["step"].max() < steps.groupby("problem")[["T_zh", "T_en"]].min().min(axis=1)).all()
    assert list(steps.columns) == ["layer", "problem", "step", "y", "y_output", "T_zh", "T_en"]
    assert (steps["layer"] == 1).all() and (steps["y_output"] >= 0).all()


def test_fewshot_prompts_hold_exemplars(tiny, tmp_path):
    import json
    import shutil

    from zhunt.errors import ZhuntError

    kw = dict(family="completion", fewshot=FEWSHOT, n_shots=2, max_new_tokens=2, batch_size=8, steps=False)
    # two exemplars make ~220-token prompts: the 128-position organism refuses them before generating
    with pytest.raises(ZhuntError, match="exceed the model's context of 128 positions"):
        _behaviour(tiny / "model", tmp_path, **kw)
    assert not (tmp_path / "records.tsv").exists()
    # the same model with a longer declared context (the test is about the prompts, not the answers)
    wide = tmp_path / "w" / "model512"
    shutil.copytree(tiny / "model", wide)
    shutil.copy(tiny / "prompts.tsv", wide.parent / "prompts.tsv")
    cfg = json.loads((wide / "config.json").read_text())
    cfg["max_position_embeddings"] = 512
    (wide / "config.json").write_text(json.dumps(cfg))
    _behaviour(wide, tmp_path, **kw)
    rec = pd.read_csv(tmp_path / "records.tsv", sep="\t")
    en = rec[rec["lang"] == "en"]["prompt"].iloc[0]
    zh = rec[rec["lang"] == "zh"]["prompt"].iloc[0]
    assert "oranges" in en and en.count("Question:") == 3
    assert "橙子" in zh


def test_steps_need_layer(tiny, tmp_path):
    from zhunt.errors import ZhuntError

    with pytest.raises(ZhuntError, match="without a layer"):
        _behaviour(tiny / "model", tmp_path, max_new_tokens=2, step_layer=None)


@pytest.mark.parametrize("layer", [0, 1])
def test_update_difference_from_the_right_layers(tiny, layer):
    """y_t = ||f_l(zh) - f_l(en)||^2 with f_l = h_{l+1} - h_l, checked against a teacher-forced
    forward pass over prompt + generated tokens (all hidden states captured with hooks)."""
    import torch

    from zhunt.models.generation import generate
    from zhunt.models.hooks import capture_hidden_states
    from zhunt.models import get_adapter, load_model

    model, tok = load_model(tiny / "model")
    texts = ["Q: What is 12 plus 7? A:", "问：12加7等于多少？答："]
    gens = generate(model, tok, texts, max_new_tokens=6, batch_size=2,
                    record_layers=B.step_record_modules(model, layer))
    hid = []  # per text: (L + 1, T_new, d) teacher-forced states at the positions that emitted each token
    for text, g in zip(texts, gens):
        ids = tok(text)["input_ids"] + g["token_ids"]
        with torch.inference_mode(), capture_hidden_states(get_adapter(model).layers) as cap:
            model(input_ids=torch.tensor([ids]))
        n0 = g["n_prompt_tokens"]
        pos = np.arange(n0 - 1, n0 - 1 + g["n_new_tokens"])
        hid.append(np.stack([cap.hidden[j][0][0, pos].double().numpy() for j in range(len(cap.hidden))]))
        np.testing.assert_allclose(g["states"][B.STEP_INPUT], hid[-1][layer], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(g["states"][B.STEP_OUTPUT], hid[-1][layer + 1], rtol=1e-4, atol=1e-4)
    long = pd.DataFrame({"id": ["p", "p"], "lang": ["en", "zh"]})
    df = B.step_distances(long, gens)
    n = min(g["n_new_tokens"] for g in gens)
    f_en, f_zh = (h[layer + 1, :n] - h[layer, :n] for h in hid)
    np.testing.assert_allclose(df["y"], ((f_zh - f_en) ** 2).sum(1), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(df["y_output"], ((hid[1][layer + 1, :n] - hid[0][layer + 1, :n]) ** 2).sum(1),
                               rtol=1e-3, atol=1e-4)
    assert not np.allclose(df["y"], df["y_output"])  # the update difference is not the output difference
