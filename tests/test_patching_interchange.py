"""Exp. A interchange design: cells, donors, sources, energy matching, metrics and the calibrated verdict."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from zhunt.calibration.generators import interchange_records as _records
from zhunt.errors import ZhuntError
from zhunt.experiments.patching_design import (Cell, donor_pairs, heldout_split, interchange_source, matched_source,
                                   pair_bases, pair_edits, parse_cell, patch_norm)
from zhunt.experiments.patching_metrics import add_holm, npe, subspace_metrics, wilcoxon_p
from zhunt.experiments.patching_verdict import ALPHA, interchange_verdict, positive_control
from zhunt.subspace import random_subspace


# ----------------------------------------------------------------------------- design
def test_cell_name_round_trip_and_bad_names():
    c = Cell("input", 3, 16, "aligned", "en<-en")
    assert c.name == "input_L3_k16_aligned_en-from-en_donor"
    assert parse_cell(c.name) == c and c.hidden_index == 3
    assert Cell("output", 3, 16, "mean", "en<-zh").hidden_index == 4
    with pytest.raises(ZhuntError, match="cell"):
        parse_cell("input_L3_k16_aligned_en-from-zh_donor")  # aligned needs one language
    with pytest.raises(ZhuntError, match="expected"):
        parse_cell("L3_k16_mean")


def test_donor_pairs_differ_in_answer_and_share_the_group():
    problems = [f"p{i}" for i in range(30)]
    answers = {p: i % 7 for i, p in enumerate(problems)}
    group = {p: i % 3 for i, p in enumerate(problems)}
    pairs, unmatched = donor_pairs(problems, answers, seed=1, n_donors=2, group=group.get)
    assert not unmatched and len(pairs) == 60
    for b, d in pairs:
        assert b != d and answers[b] != answers[d] and group[b] == group[d]
    assert pairs == donor_pairs(problems, answers, seed=1, n_donors=2, group=group.get)[0]
    lonely = {**group, "p0": "alone"}
    pairs, unmatched = donor_pairs(problems, answers, seed=1, group=lonely.get)
    assert unmatched == ["p0"] and all(b != "p0" for b, _ in pairs)


def test_heldout_split_is_seeded_and_balanced():
    s = heldout_split([f"p{i}" for i in range(20)], seed=3)
    assert sum(v == "heldout" for v in s.values()) == 10
    assert s == heldout_split([f"p{i}" for i in range(20)], seed=3)


def test_sources_mean_ot_aligned():
    rng = np.random.default_rng(0)
    X, H = rng.normal(size=(5, 6)), rng.normal(size=(4, 6))
    assert_allclose(interchange_source("mean", X, H), np.tile(X.mean(0), (4, 1)))
    assert_allclose(interchange_source("ot", X, H).mean(0), X.mean(0), atol=1e-12)
    X4 = rng.normal(size=(4, 6))
    assert_allclose(interchange_source("aligned", X4, H), X4)
    with pytest.raises(ValueError):
        interchange_source("aligned", X, H)


def test_energy_matched_patch_moves_the_state_as_far_as_the_z_patch():
    """Brute force: apply each edit to H with dense projectors and measure ||Δh||_F (tolerance 1e-4)."""
    import torch

    rng = np.random.default_rng(1)
    d, k, T = 32, 4, 7
    H, S = rng.normal(size=(T, d)), rng.normal(size=(T, d)) * 3
    V_Z = random_subspace(k, d, 5)
    V_R = pair_bases(k, d, pair_index=2, seed=0)
    assert_allclose(V_R, pair_bases(k, d, pair_index=2, seed=0))
    edits = pair_edits(S, H, V_Z, V_R)
    Pz, Pr = V_Z.T @ V_Z, V_R.T @ V_R
    _, alpha = matched_source(S, H, V_Z, V_R)
    expect = {"z": H + (S - H) @ Pz, "zperp": H + (S - H) @ (np.eye(d) - Pz), "full": S,
              "random": H + (S - H) @ Pr, "random_matched": H + alpha * (S - H) @ Pr,
              "self_mean": H + (H.mean(0) - H) @ Pz}
    for name, (edit, norm) in edits.items():
        got = edit(torch.as_tensor(H, dtype=torch.float32)).numpy()
        assert_allclose(got, expect[name], atol=1e-4, err_msg=name)
        assert_allclose(norm, np.linalg.norm(expect[name] - H), rtol=1e-5, err_msg=name)
    ratio = edits["random_matched"][1] / edits["z"][1]
    assert abs(ratio - 1) < 1e-6 and edits["random"][1] < edits["z"][1] * 2
    assert_allclose(patch_norm(S, H, None) ** 2, edits["z"][1] ** 2 + edits["zperp"][1] ** 2, rtol=1e-9)


# ----------------------------------------------------------------------------- metrics
def _verdict(rec):
    m = subspace_metrics(rec).set_index("subspace")
    return interchange_verdict(m.loc["z"].to_dict(), m.loc["random_matched"].to_dict())[0]


def test_metrics_against_hand_computation():
    from statsmodels.stats.contingency_tables import mcnemar
    from statsmodels.stats.proportion import proportion_confint

    rng = np.random.default_rng(0)
    rec = _records(rng, 40, 0.6, 0.3, 0.5, 0.2)
    rec.loc[(rec.subspace == "z") & (rec.pair < 5), "answer_lang"] = "neutral"
    m = subspace_metrics(rec).set_index("subspace")
    z, r = rec[rec.subspace == "z"], rec[rec.subspace == "random_matched"]
    k = int(z.iia_hit.sum())
    lo, hi = proportion_confint(k, 40, method="wilson")
    assert_allclose([m.loc["z", "iia"], m.loc["z", "iia_lo"], m.loc["z", "iia_hi"]], [k / 40, lo, hi])
    table = pd.crosstab(z.iia_hit.to_numpy(), r.iia_hit.to_numpy()).reindex(index=[True, False],
                                                                          columns=[True, False], fill_value=0)
    assert_allclose(m.loc["z", "p_vs_random_matched"], mcnemar(table.to_numpy(), exact=True).pvalue, rtol=1e-9)
    assert_allclose(m.loc["z", "npe"], z.npe.mean())
    assert m.loc["z", "npe_lo"] < m.loc["z", "npe"] < m.loc["z", "npe_hi"]
    assert m.loc["z", "n_neutral"] == 5 and m.loc["z", "n_lang"] == 35 and m.loc["z", "lang_keep"] == 1.0
    assert m.loc["z", "lang_keep_lo"] < 1.0  # never zero-width
    assert np.isnan(m.loc["random_matched", "p_vs_random_matched"])
    h = add_holm(m.reset_index())
    assert (h["p_holm"].dropna() >= h["p_vs_random_matched"].dropna()).all()


def test_npe_definition_and_wilcoxon():
    assert_allclose(npe([-1.0, 2.0, -3.0], [-3.0, -3.0, -3.0], [1.0, 2.0, 1.0]), [0.5, 1.0, 0.0])
    assert np.isnan(npe([0.0], [1.0], [1.0])[0])
    assert wilcoxon_p([1, 2, 3], [1, 2, 3]) == 1.0


# ----------------------------------------------------------------------------- verdict
# Null (Z no better than the matched random subspace -> null) and planted (-> causal) calibration over
# seeds: tests/test_calibration.py, case exp_a_interchange (same generator).
def test_verdict_planted_reverse_effect_is_reverse():
    rev = [_verdict(_records(np.random.default_rng(s), 60, 0.2, 0.8, 0.1, 0.8)) for s in range(5)]
    assert all(v == "reverse" for v in rev)


def test_verdict_borderline_four_of_twenty_is_not_a_success():
    e = np.zeros(20)
    rec = _records(np.random.default_rng(0), 20, 0, 0, e, e, n_hits_z=4, n_hits_r=0)
    m = subspace_metrics(rec).set_index("subspace")
    assert_allclose(m.loc["z", "p_vs_random_matched"], 0.125)
    assert m.loc["random_matched", "iia_lo"] == 0 and m.loc["random_matched", "iia_hi"] > 0
    assert _verdict(rec) == "null"


def test_verdict_without_a_ceiling_is_untestable():
    """A planted Z effect cannot be read where the full interchange does not move the answer."""
    rec = _records(np.random.default_rng(0), 60, 0.8, 0.3, 0.8, 0.1)
    m = subspace_metrics(rec).set_index("subspace")
    z, r = m.loc["z"].to_dict(), m.loc["random_matched"].to_dict()
    assert interchange_verdict(z, r, ceiling_iia=1.0)[0] == "causal"
    assert interchange_verdict(z, r, ceiling_iia=0.0)[0] == "untestable"
    assert interchange_verdict(z, r, ceiling_iia=float("nan"))[0] == "causal"  # no aligned cell: no check
    verdict, crit = interchange_verdict(z, r, ceiling_iia=0.49)
    assert verdict == "untestable" and crit["ceiling_iia"] == 0.49 and crit["iia_for_z"]


def test_positive_control_rule():
    t = pd.DataFrame([{"alignment": "aligned", "subspace": "full", "site": "input", "layer": l, "iia": v}
                      for l, v in ((1, 1.0), (3, 1.0))])
    assert positive_control(t)["holds"]
    t.loc[1, "iia"] = 0.5
    assert not positive_control(t)["holds"] and ALPHA == 0.05


# ----------------------------------------------------------------------------- a cell on a tiny organism
@pytest.fixture(scope="module")
def near_random_organism(tmp_path_factory):
    """A 3-layer organism after one step at lr 1e-9 (random init: its first answer tokens vary), 16 problems,
    its store and masks (about 30 s)."""
    from pathlib import Path

    from zhunt.models import organism
    from zhunt.stages.data import extract_prompt_set
    from zhunt.stages.weights import build_layer_masks

    templates = Path(__file__).resolve().parents[1] / "resources" / "prompts" / "templates.yaml"
    root = tmp_path_factory.mktemp("nearrandom")
    organism.train_organism(root / "model", n_layers=3, hidden_size=32, n_heads=4, n_kv_heads=2,
                            intermediate_size=64, steps=1, lr=1e-9, batch_size=16, warmup_steps=1, eval_n=4,
                            log_every=4, seed=7, threads=1)
    organism.make_organism_prompt_table(root / "prompts.tsv", n=16, seed=1)
    extract_prompt_set(root / "model", "organism", {"dtype": "float32", "template": "organism"},
                       root / "prompts.tsv", ["en", "zh"], templates, root / "store.h5")
    for layer in (0, 1, 2):
        build_layer_masks(root / "model", "organism", layer, [4], ["multihead"], root / f"L{layer}.h5")
    return root, templates


def _stage_io(org, tmp_path, *, n_donors=2, max_new_tokens=4, das=None, ms=True, lam=(1.0, 2.0)):
    """inputs, params of the stages of rule patching_cell / patching_das on the tiny organism."""
    from zhunt.experiments.ablation import write_ms_basis

    root, templates = org
    if ms and not (root / "ms_basis.h5").exists():
        write_ms_basis(root / "ms_basis.h5", root / "store.h5", "toy")
    inputs = {"model": str(root / "model"), "store": str(root / "store.h5"), "prompts": str(root / "prompts.tsv"),
              "templates": str(templates), "das": [str(das)] if das else [],
              "ms_basis": [str(root / "ms_basis.h5")] if ms else []}
    params = {"runtime": {"template": "organism"}, "languages": ["en", "zh"], "batch_size": 16,
              "max_new_tokens": max_new_tokens,
              "patching": {"n_donors": n_donors, "das": {"steps": 5, "lr": 0.01, "batch_size": 16},
                           "ms_ablation": {"layer_offsets": [0], "lam": list(lam), "primary_lam": 1.0,
                                           "pooling": "mean"}}}
    return inputs, params


def _cell(org, name, tmp_path, **kw):
    from zhunt.stages.patching import run_patching_cell

    root, _ = org
    c = parse_cell(name)
    inputs, params = _stage_io(org, tmp_path, **kw)
    out = tmp_path / f"{name}.tsv"
    run_patching_cell({**inputs, "mask": str(root / f"L{c.layer}.h5")}, params, {"records": str(out)},
                      wildcards={"cell": name})
    return pd.read_csv(out, sep="\t")


def test_extend_to_prefix_per_alignment():
    from zhunt.experiments.patching_design import extend_to_prefix

    rng = np.random.default_rng(0)
    S, H, Hp, Xp = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    S_a, H_a = extend_to_prefix("aligned", S, H, Hp, Xp)
    assert_allclose(S_a, np.vstack([S, Xp]), rtol=0, atol=0)  # the donor run's own prefix states
    assert_allclose(H_a, np.vstack([H, Hp]), rtol=0, atol=0)
    for al in ("mean", "ot"):
        S_m, _ = extend_to_prefix(al, S, H, Hp, Xp)
        assert_allclose(S_m[4:], np.tile(S.mean(axis=0), (2, 1)), atol=1e-15)  # the generated-position rule
    S0, H0 = extend_to_prefix("aligned", S, H, np.zeros((0, 3)), np.zeros((0, 3)))
    assert_allclose(S0, S, atol=0)  # no prefix: unchanged
    assert H0.shape == (4, 3)
    with pytest.raises(ValueError):
        extend_to_prefix("aligned", S, H, Hp, None)
    with pytest.raises(ValueError):
        extend_to_prefix("aligned", S, H, Hp, Xp[:1])


def _script_groups_reference(tokenizer, langs):
    """script_groups as first written: every token through batch_decode and classify_language."""
    from zhunt.data.language_id import classify_language

    tags = [classify_language(t) for t in tokenizer.batch_decode([[i] for i in range(len(tokenizer))])]
    return np.array([[t in ("zh" if lg == "zh" else "en", "mixed") for t in tags] for lg in langs])


@pytest.mark.parametrize("model", ["organism", "smollm2-135m", "gemma3-270m"])
def test_script_groups_equal_the_token_by_token_reference(model, near_random_organism):
    """The fast script masks (Rust decoder, vectorised tagging) equal decoding and tagging token by token, on
    the organism's byte-level BPE and, when prepared, on SmolLM2's and Gemma's own tokenizers (262k tokens)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from zhunt.experiments.patching_cells import script_groups

    folder = near_random_organism[0] / "model" if model == "organism" else \
        Path(__file__).resolve().parents[1] / "resources" / "models" / model
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"no prepared {model} at {folder}")
    tok = AutoTokenizer.from_pretrained(folder)
    for langs in (["en", "zh"], ["zh", "es"]):
        got = script_groups(tok, langs)
        assert got.shape == (2, len(tok)) and got.any(axis=1).all()
        np.testing.assert_array_equal(got, _script_groups_reference(tok, langs))


def test_first_divergence():
    from zhunt.experiments.patching_cells import first_divergence

    assert first_divergence([5, 7, 9], [6, 7, 9]) == (0, 5, 6)  # first tokens differ: position 0, as before
    assert first_divergence([3, 3, 7, 1], [3, 3, 8]) == (2, 7, 8)  # a shared format prefix of 2 tokens
    assert first_divergence([3, 2], [3, 2]) == (2, -1, -1)  # identical runs: no answer position
    assert first_divergence([3], [3, 4]) == (1, -1, 4)


@pytest.mark.parametrize("site", ["input", "output"])
def test_positive_control_full_aligned_interchange_gives_iia_one_at_every_layer(near_random_organism, tmp_path, site):
    """The hook, the site, the store index and the scoring at once: the donor's own states at every
    prompt position and at the pair's common prefix make the base run the donor run (IIA = 1 for every pair,
    NPE = 1 to 5e-3: LD margins are ~1e-2 here), at every layer and both sites.

    Pairs with a common prefix (``prefix_len > 0``) must be among them: before the prefix was patched, their
    prefix tokens' own states below the site still read the base prompt and the interchange missed."""
    n_prefixed = 0
    for layer in (0, 1, 2):
        rec = _cell(near_random_organism, f"{site}_L{layer}_k4_aligned_en-from-en_donor", tmp_path)
        full = rec[(rec.subspace == "full") & rec.first_differs]
        none = rec[(rec.subspace == "none") & rec.first_differs]
        assert len(full) >= 3, layer
        assert full.iia_hit.all() and not none.iia_hit.any(), layer
        assert_allclose(full.npe, 1.0, atol=5e-3)
        n_prefixed += int((full.prefix_len > 0).sum())
        assert_allclose(none.npe, 0.0, atol=1e-12)
        assert (rec.hidden_index == (layer if site == "input" else layer + 1)).all()
        assert (rec.prefix_len >= 0).all() and (full.base_token != full.donor_token).all()
    assert n_prefixed >= 2, n_prefixed


def test_iia_is_read_at_the_first_diverging_token(near_random_organism, tmp_path):
    """Pairs whose clean runs share their first token(s): IIA is scored at the first token where they diverge.

    The full interchange at the embeddings makes the base run the donor run, so on those pairs the patched
    model's argmax after the common prefix is the donor run's diverging token (IIA = 1, NPE = 1); a
    first-generated-token reading would have dropped them (identical first tokens)."""
    rec = _cell(near_random_organism, "input_L0_k4_aligned_en-from-en_donor", tmp_path)
    shared = rec[(rec.prefix_len > 0) & rec.first_differs]
    full, none = shared[shared.subspace == "full"], shared[shared.subspace == "none"]
    assert len(full) >= 2
    assert full.iia_hit.all() and (full.first_token == full.donor_token).all()
    assert (none.first_token == none.base_token).all() and not none.iia_hit.any()  # the clean run's own token
    assert_allclose(full.npe, 1.0, atol=5e-3)
    # identical clean runs carry no answer position and stay out of IIA and NPE
    same = rec[~rec.first_differs.astype(bool)]
    assert (same.base_token == -1).all() and same.npe.isna().all() and same.lang_effect.isna().all()
    m = subspace_metrics(rec).set_index("subspace")
    assert m.loc["full", "n_iia"] == rec[(rec.subspace == "full") & rec.first_differs].shape[0]
    assert m.loc["full", "iia"] == 1.0


def test_cross_language_cell_records(near_random_organism, tmp_path):
    rec = _cell(near_random_organism, "input_L1_k4_mean_en-from-zh_donor", tmp_path)
    assert set(rec.subspace) == {"none", "z", "zperp", "full", "random", "random_matched", "self_mean",
                                 "ms_ablation"}
    assert (rec.donor != rec.problem).all() and rec.groupby("pair").size().eq(7 + 2).all()  # + 2 lams
    z = rec[rec.subspace == "z"].set_index("pair").dh_norm
    rm = rec[rec.subspace == "random_matched"].set_index("pair").dh_norm
    assert_allclose(rm / z, 1.0, rtol=1e-6)  # energy-matched within 1e-6 (tolerance 10%)
    m = subspace_metrics(rec).set_index("subspace")
    assert {"iia", "iia_lo", "npe_hi", "lang_keep", "p_vs_random_matched"} <= set(m.columns)


def test_gather_writes_table_verdict_and_figure(tmp_path):
    """The stage of rule patching_interchange on planted records: table, Markdown, verdict and figure."""
    from zhunt.report.patching_render import TABLE_COLUMNS
    from zhunt.stages.patching import run_patching_interchange

    paths = []
    for i, name in enumerate(["input_L1_k4_mean_en-from-zh_donor", "input_L2_k4_mean_en-from-zh_donor",
                              "input_L1_k4_aligned_en-from-en_donor", "input_L2_k4_aligned_en-from-en_donor"]):
        rec = _records(np.random.default_rng(i), 30, 0.8, 0.3, 0.8, 0.1)
        full = rec[rec.subspace == "z"].assign(subspace="full", iia_hit=True, npe=1.0)
        ms = [rec[rec.subspace == "z"].assign(subspace="ms_ablation", iia_hit=False, npe=0.0, lam=lam)
              for lam in (2.0, 1.0)]
        rec = pd.concat([rec, full, *ms], ignore_index=True)
        rec.to_csv(tmp_path / f"{name}.tsv", sep="\t", index=False)
        paths.append(str(tmp_path / f"{name}.tsv"))

    def gather(primary, primary_lam=1.0, stem="s"):
        outs = {"table": [str(tmp_path / f"{stem}.tsv"), str(tmp_path / f"{stem}.md")],
                "verdict": str(tmp_path / f"{stem}_v.md"),
                "fig": [str(tmp_path / f"{stem}_fig.pdf"), str(tmp_path / f"{stem}_fig.png")]}
        run_patching_interchange({"cells": paths}, {"primary": primary, "primary_lam": primary_lam}, outs,
                                 wildcards={"model": "toy"})

    gather("input_L1_k4_mean_en-from-zh_donor")
    t = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    assert list(t.columns[:len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert len(t) == 4 * 5 and t["primary"].sum() == 4  # z, random_matched, full, ms_ablation at primary_lam
    ms = t[t.subspace == "ms_ablation"]
    assert ms["lam"].tolist() == [1.0, 2.0] * 4 and t.loc[t.subspace != "ms_ablation", "lam"].isna().all()
    assert t.loc[t.primary & (t.subspace == "ms_ablation"), "lam"].tolist() == [1.0]
    assert (ms["iia"] == 0).all() and (ms["p_vs_random_matched"] < 1).all()
    text = (tmp_path / "s_v.md").read_text()
    assert "ms_ablation (λ = 1)" in text and "λ = 2" not in text
    assert "ms_ablation (λ = 2)" in (tmp_path / "s.md").read_text()
    assert (t["p_holm"].dropna() >= t["p_vs_random_matched"].dropna()).all()
    assert positive_control(t)["holds"]
    assert "**Primary cell `input_L1_k4_mean_en-from-zh_donor`: causal**" in text
    assert "Positive control" in text and "holds" in text and "MIN" not in text and "0.1" in text
    assert (tmp_path / "s_fig.png").stat().st_size > 0 and (tmp_path / "s_fig.pdf").exists()
    from zhunt.report.summary import measured

    (tmp_path / "toy/patching").mkdir(parents=True)
    t.to_csv(tmp_path / "toy/patching/subspaces.tsv", sep="\t", index=False)
    line = measured("patching_interchange", "toy", tmp_path)
    assert line.startswith("primary (site input, L1, k=4, mean, en<-zh): causal") and "positive control holds" in line
    with pytest.raises(ZhuntError, match="primary"):
        gather("input_L9_k4_mean_en-from-zh_donor", stem="x")
    with pytest.raises(ZhuntError, match="primary_lam"):
        gather("input_L1_k4_mean_en-from-zh_donor", primary_lam=0.5, stem="x")


def test_das_is_fitted_on_the_train_split_and_scored_on_heldout_pairs(near_random_organism, tmp_path):
    import h5py

    from zhunt.experiments.das import subspace_overlap
    from zhunt.experiments.ablation import read_ms_basis
    from zhunt.stages.patching import run_patching_das
    from zhunt.weights.masks import read_mask

    root, _ = near_random_organism
    inputs, params = _stage_io(near_random_organism, tmp_path)
    run_patching_das({**inputs, "mask": str(root / "L1.h5")}, params, {"basis": str(tmp_path / "das.h5")},
                     wildcards={"site": "input", "layer": "1", "k": "4", "lang": "en"})
    with h5py.File(tmp_path / "das.h5") as f:
        V, attrs = f["basis"][()], dict(f.attrs)
    assert_allclose(V @ V.T, np.eye(4), atol=1e-5)
    assert attrs["n_train"] >= 1 and 0 <= attrs["overlap_z"] <= 1 and attrs["hidden_index"] == 1
    rec = _cell(near_random_organism, "input_L1_k4_mean_en-from-zh_donor", tmp_path, max_new_tokens=3,
                das=tmp_path / "das.h5")
    das = rec[rec.subspace == "das"]
    assert len(das) and (das.split == "heldout").all()
    assert set(rec[rec.split == "heldout"].pair) == set(das.pair)
    assert_allclose(das.overlap_z, attrs["overlap_z"], rtol=1e-5)  # the records' TSV: 6 significant digits
    # the overlaps with Z and M_s at the cell's layer and site, on the das rows only
    V_Z, M_s = read_mask(root / "L1.h5", "multihead", 4), read_ms_basis(root / "ms_basis.h5", 1, "input")
    assert_allclose(das.overlap_ms, subspace_overlap(V, M_s)[0], rtol=1e-5)
    assert_allclose(das.angle_z_deg_median, subspace_overlap(V, V_Z)[1], rtol=1e-5)
    assert_allclose(das.angle_ms_deg_median, subspace_overlap(V, M_s)[1], rtol=1e-5)
    assert rec.loc[rec.subspace != "das", ["overlap_ms", "angle_z_deg_median"]].isna().all().all()
    m = subspace_metrics(rec).set_index("subspace")
    assert_allclose(m.loc["das", "angle_ms_deg_median"], das.angle_ms_deg_median.iloc[0])


def test_unfitted_das_basis_adds_no_rows(near_random_organism, tmp_path):
    """An empty DAS basis (fit_cell_das found no diverging train pair) is reported by the absence of das rows."""
    import h5py

    with h5py.File(tmp_path / "das.h5", "w") as f:
        f["basis"] = np.zeros((0, 32), dtype=np.float32)
        f.attrs["overlap_z"], f.attrs["n_train"] = np.nan, 0
    rec = _cell(near_random_organism, "input_L1_k4_mean_en-from-zh_donor", tmp_path, n_donors=1, max_new_tokens=3,
                das=tmp_path / "das.h5", ms=False)
    assert "das" not in set(rec.subspace) and "z" in set(rec.subspace) and "lam" not in rec.columns


def test_subspace_overlap_against_scipy_on_planted_subspaces():
    from scipy.linalg import subspace_angles

    from zhunt.experiments.das import subspace_overlap

    d = 12
    E = np.eye(d)
    assert_allclose(subspace_overlap(E[:3], E[:3]), (1.0, 0.0), atol=1e-7)  # identical: 0 degrees
    assert_allclose(subspace_overlap(E[:3], E[3:5]), (0.0, 90.0), atol=1e-7)  # orthogonal: 90 degrees
    Q = random_subspace(4, d, 3)
    W = random_subspace(2, d, 4)
    sim, ang = subspace_overlap(Q, W)
    theta = subspace_angles(Q.T, W.T)
    assert_allclose(ang, np.degrees(np.median(theta)), rtol=1e-10)
    assert_allclose(sim, np.mean(np.cos(theta) ** 2), rtol=1e-10)
    # planted: the first row shared, the second at 60 degrees -> angles (0, 60), median 30
    V = np.vstack([E[0], E[1]])
    U = np.vstack([E[0], 0.5 * E[1] + np.sqrt(0.75) * E[2]])
    assert_allclose(subspace_overlap(V, U), ((1 + 0.25) / 2, 30.0), atol=1e-7)


def test_ms_ablation_rows_one_per_lam_and_lam_zero_is_the_clean_run(near_random_organism, tmp_path):
    """ms_ablation rows: one per (pair, lam); lam = 0 is the identity, so its rows reproduce the none rows."""
    from zhunt.experiments.ablation import read_ms_basis

    root, _ = near_random_organism
    rec = _cell(near_random_organism, "input_L1_k4_mean_en-from-zh_donor", tmp_path, lam=(0.0, 1.0))
    ms = rec[rec.subspace == "ms_ablation"]
    n_p = rec.pair.nunique()
    assert len(ms) == 2 * n_p and sorted(set(ms.lam)) == [0.0, 1.0] and rec.loc[rec.subspace != "ms_ablation",
                                                                             "lam"].isna().all()
    none = rec[rec.subspace == "none"].set_index("pair")
    zero = ms[ms.lam == 0.0].set_index("pair")
    assert_allclose(zero.ld, none.ld, atol=1e-5)
    assert (zero.text == none.text).all() and (zero.first_token == none.first_token).all()
    assert_allclose(zero.npe.dropna(), 0.0, atol=1e-4)
    one = ms[ms.lam == 1.0].set_index("pair")
    M = read_ms_basis(root / "ms_basis.h5", 1, "input")
    assert (one.dh_norm > 0).all() and M.shape[1] == 32 and (zero.dh_norm == 0).all()
    m = subspace_metrics(rec)
    assert list(m.loc[m.subspace == "ms_ablation", "lam"]) == [0.0, 1.0]
    assert m.loc[m.subspace != "ms_ablation", "lam"].isna().all()


def test_answer_language_reads_the_answer_span_only():
    from zhunt.data.answers import answer_language, answer_span, extract_answer

    assert answer_language(" thirty-seven") == "en" and answer_language("三十七") == "zh"
    assert answer_language(" 37") == "neutral" and answer_language("") == "neutral"
    assert answer_language(" The answer is 37. 问：下一个问题") == "neutral"  # digits; the rest is not the span
    text = " thirty-seven\n问：23加14等于多少？答：三十七"
    assert answer_span(text)[0] == extract_answer(text) == 37 and answer_language(text) == "en"


# ----------------------------------------------------------------------------- the causal layer sweep
def test_layer_causal_sweep_matches_the_mean_cells_z_rows(near_random_organism, tmp_path):
    """Rule layer_causal's stage: one row per layer, and at each layer the IIA and NPE of the mean-aligned
    donor cell's ``z`` rows (the same pairs, Z and source; the sweep's mean is the store's float32 pooled
    vector, the cell's a float64 mean of the rows: NPE to 1e-4)."""
    from zhunt.experiments.patching_metrics import subspace_metrics
    from zhunt.stages.layers import run_layer_causal

    root, _ = near_random_organism
    inputs, params = _stage_io(near_random_organism, tmp_path, ms=False)
    params = {**params, "k": 4, "site": "input", "direction": "en<-zh", "n_donors": 2}
    out = [str(tmp_path / "causal.tsv"), str(tmp_path / "causal.md")]
    run_layer_causal(inputs, params, {"table": out}, wildcards={"model": "toy"})
    t = pd.read_csv(out[0], sep="\t")
    assert list(t["layer"]) == [0, 1, 2] and (t["hidden_index"] == t["layer"]).all()
    assert set(t[["alignment", "source", "direction"]].itertuples(index=False, name=None)) == {("mean", "donor",
                                                                                                 "en<-zh")}
    assert (t["model"] == "toy").all() and (t["iia_lo"] <= t["iia"]).all() and (t["iia"] <= t["iia_hi"]).all()
    assert t["npe"].notna().all() and (t["n_iia"] >= 3).all()
    for layer in (0, 1, 2):
        rec = _cell(near_random_organism, f"input_L{layer}_k4_mean_en-from-zh_donor", tmp_path, ms=False)
        z = subspace_metrics(rec).set_index("subspace").loc["z"]
        row = t[t["layer"] == layer].iloc[0]
        assert row["n_iia"] == z["n_iia"] and row["n_pairs"] == rec["pair"].nunique()
        assert_allclose(row["iia"], z["iia"], rtol=1e-5)  # the TSV keeps 6 significant digits
        assert_allclose(row["npe"], z["npe"], atol=1e-4)
    with pytest.raises(ZhuntError, match=r"^study\.patching\.primary\.direction: 'en<-fr' needs languages en, fr"):
        run_layer_causal(inputs, {**params, "direction": "en<-fr"}, {"table": out}, wildcards={"model": "toy"})
    with pytest.raises(ZhuntError, match=r"^models\.toy\.study\.patch_k: k=32"):
        run_layer_causal(inputs, {**params, "k": 32}, {"table": out}, wildcards={"model": "toy"})


# ----------------------------------------------------------------------------- the DAS layer sweep
def test_das_sweep_layers_stride_and_included_layers():
    from zhunt.experiments.layer_causal import das_sweep_layers

    assert das_sweep_layers(18, 3, [12, 15, 16]) == [0, 3, 6, 9, 12, 15, 16]
    assert das_sweep_layers(30, 3, [18, 26, 27]) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 26, 27]
    assert das_sweep_layers(6, 1, [3]) == list(range(6))
    with pytest.raises(ValueError, match="every must be >= 1"):
        das_sweep_layers(6, 0)
    with pytest.raises(ValueError, match="layer 6 is outside the model's 6 decoder layers"):
        das_sweep_layers(6, 2, [6])


def _das_params(params, **das):
    return {**params, "k": 4, "site": "input", "direction": "en<-zh", "n_donors": 2, "every": 1, "include": [],
            "das": {"steps": 3, "lr": 0.01, "batch_size": 8, "init": "random", **das}}


def test_layer_das_scores_z_and_das_on_the_heldout_pairs(near_random_organism, tmp_path):
    """Rule layer_das's stage on the tiny organism: two rows per layer, scored on the pairs whose base is
    held out; DAS started at Z with a vanishing step size is Z (same IIA, NPE to 1e-4), so the two rows
    go through one scoring path; the z rows equal Z's scores on those pairs computed independently
    (the causal sweep's row function over the held-out subset of the cell's records)."""
    from zhunt.experiments.patching_design import donor_pairs, heldout_split
    from zhunt.stages.layers import run_layer_das

    inputs, params = _stage_io(near_random_organism, tmp_path, ms=False)
    out = [str(tmp_path / "das.tsv"), str(tmp_path / "das.md")]
    run_layer_das(inputs, _das_params(params, init="z", lr=1e-12), {"table": out}, wildcards={"model": "toy"})
    t = pd.read_csv(out[0], sep="\t")
    assert list(t["layer"]) == [0, 0, 1, 1, 2, 2] and list(t["subspace"]) == ["z", "das"] * 3
    assert (t["split"] == "heldout").all() and (t["n_train"] > 0).all() and (t["model"] == "toy").all()
    z, das = t[t["subspace"] == "z"].set_index("layer"), t[t["subspace"] == "das"].set_index("layer")
    assert_allclose(das["iia"], z["iia"], rtol=1e-5)
    assert_allclose(das["npe"], z["npe"], atol=1e-4)
    assert_allclose(das["overlap_z"], 1.0, atol=1e-5)
    # the held-out pairs: bases in the held-out split (the cells' split and donor pairs, seed 0)
    prompts = pd.read_csv(inputs["prompts"], sep="\t")
    problems, answers = list(prompts["id"]), dict(zip(prompts["id"], prompts["answer"].astype(int)))
    pairs, _ = donor_pairs(problems, answers, seed=0, n_donors=2)
    split = heldout_split(problems, seed=0)
    assert (t["n_pairs"] == sum(split[b] == "heldout" for b, _ in pairs)).all()
    # Z's held-out scores from the mean cell's records (an independent path: the cell's own pairs and sources)
    from zhunt.experiments.patching_metrics import subspace_metrics

    for layer in (0, 1, 2):
        rec = _cell(near_random_organism, f"input_L{layer}_k4_mean_en-from-zh_donor", tmp_path, ms=False)
        m = subspace_metrics(rec[rec["split"] == "heldout"]).set_index("subspace").loc["z"]
        assert z.loc[layer, "n_iia"] == m["n_iia"]
        assert_allclose(z.loc[layer, "iia"], m["iia"], rtol=1e-5)
        assert_allclose(z.loc[layer, "npe"], m["npe"], atol=1e-4)


def test_layer_das_fits_a_learned_subspace_and_rejects_bad_layers(near_random_organism, tmp_path):
    """A random start ends away from Z (overlap well below 1); the layers come from ``every`` and
    ``include``; a layer outside the model is one line naming the config key."""
    from zhunt.stages.layers import run_layer_das

    inputs, params = _stage_io(near_random_organism, tmp_path, ms=False)
    out = [str(tmp_path / "das.tsv"), str(tmp_path / "das.md")]
    run_layer_das(inputs, {**_das_params(params, steps=40, lr=0.05), "every": 2, "include": [1]}, {"table": out},
                  wildcards={"model": "toy"})
    t = pd.read_csv(out[0], sep="\t")
    das = t[t["subspace"] == "das"].set_index("layer")
    assert list(das.index) == [0, 1, 2]
    assert ((das["overlap_z"] > 0) & (das["overlap_z"] < 0.9)).all() and (das["seconds"] > 0).all()
    assert das["final_loss"].notna().all() and (das["steps"] == 40).all()
    assert ((das["iia"] >= das["iia_lo"]) & (das["iia"] <= das["iia_hi"])).all()
    with pytest.raises(ZhuntError, match=r"^models\.toy\.study\.layer_das: layer 7 is outside"):
        run_layer_das(inputs, {**_das_params(params), "include": [7]}, {"table": out}, wildcards={"model": "toy"})
