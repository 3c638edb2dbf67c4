"""Tests for zhunt.experiments.patching (Exp. A): patch algebra, OT alignment, metrics, verdict, the stage."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zhunt.experiments import patching as P
from zhunt.models.generation import SubspaceEdit, generate
from zhunt.subspace import project, project_complement, random_subspace

pytest.importorskip("ot")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "resources" / "prompts" / "templates.yaml"
ORGANISM = Path("/tmp/zhunt-organism")


# ------------------------------------------------------------------------------- patch algebra
def _h_s_V(d=48, k=6, T=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(T, d)).astype(np.float32), rng.normal(size=(T, d)).astype(np.float32),
            random_subspace(k, d, seed).astype(np.float32))


def test_projectors_sum_to_identity():
    h, _, V = _h_s_V()
    np.testing.assert_allclose(project(h, V) + project_complement(h, V), h, atol=1e-6)
    Vt = torch.as_tensor(V)
    ht = torch.as_tensor(h)
    # each patch with the target's own content is the identity
    for mode in ("span", "complement", "full"):
        torch.testing.assert_close(SubspaceEdit(Vt, ht, mode)(ht), ht, atol=1e-5, rtol=0)
    # Z-patch then Z⊥-patch, both with the own content: the input again
    both = SubspaceEdit(Vt, ht, "complement")(SubspaceEdit(Vt, ht, "span")(ht))
    torch.testing.assert_close(both, ht, atol=1e-5, rtol=0)


def test_patches_compose_and_restore():
    h, s, V = _h_s_V(seed=1)
    Vt, ht, st = torch.as_tensor(V), torch.as_tensor(h), torch.as_tensor(s)
    z = SubspaceEdit(Vt, st, "span")(ht)  # P_Z⊥ h + P_Z s
    torch.testing.assert_close(z, torch.as_tensor(project_complement(h, V) + project(s, V)), atol=1e-5, rtol=0)
    # Z-patch, then Z-patch back with the own content: the input again
    torch.testing.assert_close(SubspaceEdit(Vt, ht, "span")(z), ht, atol=1e-5, rtol=0)
    # Z-patch then Z⊥-patch with the same source = the full patch
    torch.testing.assert_close(SubspaceEdit(Vt, st, "complement")(z), st, atol=1e-5, rtol=0)
    zp = SubspaceEdit(Vt, st, "complement")(ht)
    # Z⊥-patch undone by a Z⊥-patch with the own content
    torch.testing.assert_close(SubspaceEdit(Vt, ht, "complement")(zp), ht, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- OT
def test_ot_plan_marginals_and_sources():
    rng = np.random.default_rng(0)
    Xs, Xt = rng.normal(size=(7, 16)), rng.normal(size=(5, 16))
    pi = P.ot_plan(Xs, Xt)
    assert pi.shape == (7, 5)
    np.testing.assert_allclose(pi.sum(axis=1), np.full(7, 1 / 7), atol=1e-9)
    np.testing.assert_allclose(pi.sum(axis=0), np.full(5, 1 / 5), atol=1e-9)
    assert (pi >= 0).all()
    Z = P.ot_sources(Xs, Xt)
    assert Z.shape == (5, 16)
    np.testing.assert_allclose(Z.mean(axis=0), P.mean_source(Xs), atol=1e-9)  # averages to the mean
    # identical clouds (permuted): the exact plan is the matching permutation
    perm = rng.permutation(5)
    np.testing.assert_allclose(P.ot_sources(Xt[perm], Xt), Xt, atol=1e-9)
    # Sinkhorn on the max-normalised cost: finite, marginals close
    big = P.ot_plan(Xs * 1e3, Xt * 1e3, sinkhorn=True)
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big.sum(axis=1), np.full(7, 1 / 7), atol=1e-6)
    np.testing.assert_allclose(big.sum(axis=0), np.full(5, 1 / 5), atol=1e-6)
    Zs = P.ot_sources(Xs, Xt, sinkhorn=True)
    assert Zs.shape == (5, 16)


def test_directions_and_random_bases():
    assert P.parse_direction("en<-zh") == ("en", "zh")
    assert P.direction_slug("zh<-en") == "zh-from-en"
    with pytest.raises(Exception):
        P.parse_direction("en<-en")
    a, b = P.random_bases(4, 32, 3, seed=0), P.random_bases(4, 32, 3, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.allclose(a[0], a[1])
    np.testing.assert_allclose(a[0] @ a[0].T, np.eye(4), atol=1e-10)


def test_patch_rows_structure():
    V = random_subspace(3, 8, 0)
    rows, edits = P.patch_rows(["p1", "p2"], {"p1": np.zeros(8), "p2": np.ones((4, 8))}, V,
                               P.random_bases(3, 8, 2))
    assert [r["condition"] for r in rows[:6]] == ["none", "z", "zperp", "full", "random", "random"]
    assert [r["subspace"] for r in rows[:6]] == [-1, -1, -1, -1, 0, 1]
    assert edits[0] is None
    assert [e.mode for e in edits[1:6]] == ["span", "complement", "full", "span", "span"]
    assert edits[1].basis is edits[7].basis is edits[8].basis  # one shared tensor for every Z edit
    assert len(rows) == 12


# ------------------------------------------------------------------------------- metrics and verdict
def synthetic(n=30, z_change=1.0, zp_change=0.0, z_keep=1.0, zp_keep=0.0, rand_change=0.0, n_random=5):
    """Records of one config: fractions of problems (the first ones) showing each effect."""
    rows = []
    for i in range(n):
        pid = f"p{i:02d}"
        base = 100 + i

        def rec(cond, changed, kept, r=-1):
            rows.append({"problem": pid, "condition": cond, "subspace": r,
                         "extracted": base + 1 if changed else base, "language_preserved": kept,
                         "text": f"out {cond} {i}", "answer": base})

        rec("none", False, True)
        rec("z", i < z_change * n, i < z_keep * n)
        rec("zperp", i < zp_change * n, i < zp_keep * n)
        rec("full", i < z_change * n, i < zp_keep * n)
        for r in range(n_random):
            rec("random", i < rand_change * n, True, r)
    df = pd.DataFrame(rows)
    df["extracted"] = df["extracted"].astype("Int64")
    return df


def test_metrics_values():
    m = P.config_metrics(synthetic(n=20, z_change=0.5, zp_change=0.1, z_keep=0.9, zp_keep=0.3, rand_change=0.2))
    assert m["n_problems"] == 20 and m["n_random"] == 5
    assert m["z_answer_change"] == 0.5 and m["zperp_answer_change"] == pytest.approx(0.1)
    assert m["z_language_preservation"] == pytest.approx(0.9)
    assert m["zperp_language_disruption"] == pytest.approx(0.7)
    assert m["random_answer_change"] == pytest.approx(0.2)
    assert m["z_minus_random_answer_change"] == pytest.approx(0.3)
    assert m["full_agree_z"] == 1.0 and m["full_like"] == "Z"
    assert m["mcnemar_answer_n01"] == 8 and m["mcnemar_answer_n10"] == 0
    for name in ("z_answer_change", "zperp_language_disruption", "random_answer_change"):
        assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"]
    assert P.config_metrics(synthetic(n=20)) == P.config_metrics(synthetic(n=20))  # fixed seed


def test_missing_answer_counts_as_change():
    df = synthetic(n=4, z_change=0.0)
    df.loc[(df["condition"] == "z") & (df["problem"] == "p00"), "extracted"] = pd.NA
    df.loc[df["problem"] == "p01", "extracted"] = pd.NA  # NA everywhere: no change
    m = P.config_metrics(df)
    assert m["z_answer_change"] == 0.25


@pytest.mark.parametrize("kw,expected", [
    (dict(z_change=1.0, zp_change=0.0, z_keep=1.0, zp_keep=0.0), "double dissociation"),
    (dict(z_change=0.9, zp_change=0.1, z_keep=0.9, zp_keep=0.1), "double dissociation"),
    (dict(z_change=1.0, zp_change=0.0, z_keep=0.3, zp_keep=1.0), "partial success"),   # no language effect
    (dict(z_change=0.8, zp_change=0.4, z_keep=1.0, zp_keep=0.0), "partial success"),   # Z⊥ changes answers too
    (dict(z_change=0.5, zp_change=0.5, z_keep=1.0, zp_keep=0.0), "null"),
    (dict(z_change=0.0, zp_change=0.0, z_keep=1.0, zp_keep=1.0), "null"),
    (dict(z_change=1.0, zp_change=0.0, z_keep=1.0, zp_keep=0.0, rand_change=1.0), "null"),  # random does it too
    (dict(z_change=0.1, zp_change=0.9, z_keep=1.0, zp_keep=1.0), "reverse"),
])
def test_verdict_cases(kw, expected):
    verdict, crit = P.config_verdict(P.config_metrics(synthetic(**kw)))
    assert verdict == expected, crit


def test_overall_and_caption():
    assert P.overall_verdict(["null", "partial success", "reverse"]) == "partial success"
    assert P.overall_verdict(["null", "reverse"]) == "reverse"
    assert P.overall_verdict(["null", "double dissociation"]) == "double dissociation"
    assert P.overall_verdict(["null"]) == "null"
    cap = P.verdict_caption()
    assert str(P.ALPHA) in cap and "80%" in cap and "20%" in cap


def test_patch_table_format():
    df = synthetic(n=3)
    df.loc[(df["condition"] == "z") & (df["problem"] == "p00"), "text"] = "a|b\nc" + "x" * 100
    from zhunt.report.patching_grid import patch_table

    tab, md = patch_table(df, "en<-zh")
    assert list(tab.columns[:5]) == ["Problem", "Original output (en)", "Z-patched (en←zh)",
                                     "Z⊥-patched (en←zh)", "Full-patched"]
    assert tab.loc[0, "Z-patched (en←zh)"] == "a|b\nc" + "x" * 100  # whole text in the TSV frame
    line = md.splitlines()[2]
    assert "a\\|b\\nc" in line and "…" in line and "\n" not in line
    assert len(md.splitlines()) == 2 + 3


# ------------------------------------------------------------------------------- donor design
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_donor_map_is_a_derangement_to_other_answers(seed):
    rng = np.random.default_rng(seed)
    problems = [f"p{i}" for i in range(25)]
    answers = {p: int(a) for p, a in zip(problems, rng.integers(0, 4, size=25))}  # many ties
    d = P.donor_map(problems, answers, seed=seed)
    assert list(d) == problems
    assert all(d[p] != p and answers[d[p]] != answers[p] for p in problems)
    assert d == P.donor_map(problems, [answers[p] for p in problems], seed=seed)  # fixed, sequence form too
    assert any(P.donor_map(problems, answers, seed=s) != d for s in range(seed + 1, seed + 4))


def test_donor_map_edge_cases():
    assert P.donor_map(["a", "b"], [1, 2]) == {"a": "b", "b": "a"}
    d = P.donor_map(["a", "b", "c"], [1, 1, 2])
    assert d["a"] == d["b"] == "c" and d["c"] in ("a", "b")
    from zhunt.errors import ZhuntError
    with pytest.raises(ZhuntError, match="no donor"):
        P.donor_map(["a", "b", "c"], [5, 5, 5])


def synthetic_donor(n=30, z_tr=1.0, zp_tr=0.0, full_tr=1.0, z_keep=1.0, zp_keep=0.0, rand_tr=0.0, n_random=5):
    """Donor records of one config: the first fractions of the problems show each effect."""
    from zhunt.calibration.generators import donor_rows

    return donor_rows(n, lambda i: {"z": (i < z_tr * n, i < z_keep * n), "zperp": (i < zp_tr * n, i < zp_keep * n),
                                    "full": (i < full_tr * n, i < zp_keep * n),
                                    "random": [(i < rand_tr * n, True)] * n_random}, n_random)


def test_donor_metrics_values():
    m = P.donor_metrics(synthetic_donor(n=20, z_tr=0.6, zp_tr=0.1, z_keep=0.9, zp_keep=0.3, rand_tr=0.2))
    assert m["n_problems"] == 20 and m["n_random"] == 5
    assert m["z_transfer"] == pytest.approx(0.6) and m["zperp_transfer"] == pytest.approx(0.1)
    assert m["z_kept"] == pytest.approx(0.4) and m["zperp_kept"] == pytest.approx(0.9)
    assert m["random_transfer"] == pytest.approx(0.2) and m["random_kept"] == pytest.approx(0.8)
    assert m["none_transfer"] == 0.0
    assert m["z_language_preservation"] == pytest.approx(0.9)
    assert m["zperp_language_disruption"] == pytest.approx(0.7)
    assert m["z_minus_random_transfer"] == pytest.approx(0.4)
    assert m["mcnemar_transfer_n01"] == 10 and m["mcnemar_transfer_n10"] == 0 and m["mcnemar_transfer_p"] < 0.01
    for name in ("z_transfer", "zperp_transfer", "random_transfer", "z_kept"):
        assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"]
    # a missing answer never transfers, and NA == NA counts as kept
    df = synthetic_donor(n=4, z_tr=1.0)
    df.loc[df["condition"] == "z", "extracted"] = pd.NA
    df.loc[(df["condition"] == "none") & (df["problem"] == "p00"), "extracted"] = pd.NA
    m = P.donor_metrics(df)
    assert m["z_transfer"] == 0.0 and m["z_kept"] == 0.25


@pytest.mark.parametrize("kw,expected", [
    (dict(z_tr=1.0, zp_tr=0.0, z_keep=1.0, zp_keep=0.0), "double dissociation"),
    (dict(z_tr=0.8, zp_tr=0.1, z_keep=0.9, zp_keep=0.2), "double dissociation"),
    (dict(z_tr=0.9, zp_tr=0.0, z_keep=1.0, zp_keep=1.0), "partial success"),     # no language effect
    (dict(z_tr=0.9, zp_tr=0.0, z_keep=0.5, zp_keep=0.0), "null"),                # Z breaks the language
    (dict(z_tr=0.9, zp_tr=0.0, z_keep=1.0, zp_keep=0.0, rand_tr=0.9), "null"),   # random transfers as well
    (dict(z_tr=0.5, zp_tr=0.5, z_keep=1.0, zp_keep=0.0), "null"),
    (dict(z_tr=0.0, zp_tr=0.0, z_keep=1.0, zp_keep=1.0), "null"),               # pure disruption / nothing
    (dict(z_tr=0.0, zp_tr=0.9, z_keep=1.0, zp_keep=1.0), "reverse"),
])
def test_donor_verdict_cases(kw, expected):
    verdict, crit = P.donor_verdict(P.donor_metrics(synthetic_donor(**kw)))
    assert verdict == expected, crit


def test_donor_caption_states_thresholds():
    cap = P.donor_verdict_caption()
    assert "80%" in cap and str(P.N_BOOTSTRAP) in cap and "Z carries the problem" in cap


def test_donor_verdict_detects_planted_z_on_toy_model():
    """A linear toy 'model': the answer is read from Z, the language from Z⊥. Donor-patching
    Z must transfer the donor's answer and keep the language; Z⊥ must flip the language only."""
    rng = np.random.default_rng(0)
    d, k, n, T = 64, 4, 30, 6
    V = random_subspace(k, d, rng)                    # Z basis (k, d)
    u = V[0]                                          # answer direction, inside Z
    w = random_subspace(1, d, rng)[0]
    w = w - V.T @ (V @ w)
    w /= np.linalg.norm(w)                            # language direction, inside Z⊥
    answers = [int(a) for a in rng.integers(1, 40, size=n)]
    problems = [f"p{i:02d}" for i in range(n)]

    def states(i, lang):  # T tokens: answer on u, language sign on w, noise elsewhere
        noise = rng.normal(scale=0.05, size=(T, d))
        return answers[i] * u + (3.0 if lang == "en" else -3.0) * w + noise

    def read(h):  # the toy model's output: (answer, language) from the mean state
        hm = np.asarray(h, dtype=np.float64).mean(axis=0)
        return int(round(float(hm @ u))), "en" if hm @ w > 0 else "zh"

    donors = P.donor_map(problems, answers, seed=0)
    idx = {p: i for i, p in enumerate(problems)}
    Vt = torch.as_tensor(V, dtype=torch.float32)
    rand = [torch.as_tensor(R, dtype=torch.float32) for R in P.random_bases(k, d, 5, seed=0)]
    rows = []
    for i, p in enumerate(problems):
        h_en = torch.as_tensor(states(i, "en"), dtype=torch.float32)
        src = torch.as_tensor(P.mean_source(states(idx[donors[p]], "zh")), dtype=torch.float32)
        conds = [("none", -1, h_en), ("z", -1, SubspaceEdit(Vt, src, "span")(h_en)),
                 ("zperp", -1, SubspaceEdit(Vt, src, "complement")(h_en)),
                 ("full", -1, SubspaceEdit(None, src, "full")(h_en))]
        conds += [("random", r, SubspaceEdit(R, src, "span")(h_en)) for r, R in enumerate(rand)]
        for cond, r, h in conds:
            ans, lang = read(h.numpy())
            rows.append({"problem": p, "condition": cond, "subspace": r, "extracted": ans,
                         "language_preserved": lang == "en", "donor_answer": answers[idx[donors[p]]]})
    m = P.donor_metrics(pd.DataFrame(rows))
    verdict, crit = P.donor_verdict(m)
    assert m["z_transfer"] == 1.0 and m["zperp_transfer"] == 0.0 and m["full_transfer"] == 1.0
    assert m["zperp_language_disruption"] == 1.0 and m["z_language_preservation"] == 1.0
    assert m["random_transfer"] < 0.5
    assert verdict == "double dissociation", crit


# ------------------------------------------------------------------------------- on a (tiny) organism
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_organism):
    """The session's 12-step organism, 6 problems, its activation store and masks (about 5 s)."""
    from zhunt.models import organism
    from zhunt.stages.data import extract_prompt_set
    from zhunt.stages.weights import build_layer_masks

    root = tmp_path_factory.mktemp("tinyorg")
    (root / "model").symlink_to(tiny_organism[0], target_is_directory=True)
    organism.make_organism_prompt_table(root / "prompts.tsv", n=6, seed=1)
    extract_prompt_set(root / "model", "organism", {"dtype": "float32", "template": "organism"},
                       root / "prompts.tsv", ["en", "zh"], TEMPLATES, root / "store.h5")
    for l in (0, 1):
        build_layer_masks(root / "model", "organism", l, [4], ["multihead"], root / f"L{l}.h5")
    return root


def test_identity_patch_with_own_states_reproduces_baseline(tiny):
    from zhunt.weights.masks import read_mask
    from zhunt.models import load_model
    from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long
    from zhunt.data.store import ActivationStore

    model, tok = load_model(tiny / "model", device="cpu")
    long = to_long(load_prompt_table(tiny / "prompts.tsv", ["en"]), ["en"])
    texts = render_prompts(long, "organism", load_templates(TEMPLATES))
    base = generate(model, tok, texts, max_new_tokens=6)
    V = read_mask(tiny / "L1.h5", "multihead", 4)
    with ActivationStore(tiny / "store.h5") as st:
        own = [st.tokens(p, "en", 2)[~st.token_mask(p, "en")] for p in long["id"]]
    for mode in ("full", "span", "complement"):
        edits = [SubspaceEdit(None if mode == "full" else V, o, mode) for o in own]
        out = generate(model, tok, texts, max_new_tokens=6, layer_module=1, edits=edits, batch_size=4)
        assert [r["token_ids"] for r in out] == [r["token_ids"] for r in base], mode


def _run_grid(tiny, out, *, masks, layers, ks, alignments, directions, n_random, max_new_tokens, batch_size=16,
              sources=("same", "donor"), prompts=None):
    """The stage of rule patching (zhunt.stages.patching.run_patching) on the tiny organism; its outputs."""
    from zhunt.stages.patching import run_patching

    outputs = {"records": str(out / "records.tsv"), "metrics": [str(out / "metrics.tsv"), str(out / "metrics.md")],
               "verdict": str(out / "verdict.md"), "tables": str(out / "tables")}
    inputs = {"model": str(tiny / "model"), "store": str(tiny / "store.h5"), "masks": [str(m) for m in masks],
              "prompts": str(prompts or tiny / "prompts.tsv"), "templates": str(TEMPLATES)}
    params = {"runtime": {"template": "organism"}, "languages": ["en", "zh"], "layers": layers, "ks": ks,
              "max_new_tokens": max_new_tokens, "batch_size": batch_size,
              "patching": {"alignments": list(alignments), "directions": list(directions), "n_random": n_random,
                           "patch_generated": False, "sinkhorn": False, "sources": list(sources)}}
    run_patching(inputs, params, outputs, wildcards={"model": "organism"})
    return outputs


def test_run_patching_stage(tiny, tmp_path):
    out = tmp_path / "out"
    _run_grid(tiny, out, masks=[tiny / "L1.h5", tiny / "L0.h5"], layers=[1, 0], ks=[4], alignments=("mean", "ot"),
              directions=("en<-zh", "zh<-en"), n_random=2, max_new_tokens=4, batch_size=8)
    met = pd.read_csv(out / "metrics.tsv", sep="\t", keep_default_na=False, na_values=["", "NaN", "nan"])  # "null"
    assert len(met) == 2 * 1 * 2 * 2 * 2  # layers x k x alignments x directions x sources
    assert list(met["source"][:2]) == ["same", "donor"]
    assert (met.loc[0, ["layer", "k", "alignment", "direction", "source"]].tolist()
            == [1, 4, "mean", "en<-zh", "same"])  # the primary configuration comes first
    assert met["primary"].tolist() == [True, True] + [False] * 14  # ... and is flagged, once per source
    rec = pd.read_csv(out / "records.tsv", sep="\t")
    assert len(rec) == 2 * 8 * 6 * (4 + 2)
    assert set(rec["condition"]) == {"none", "z", "zperp", "full", "random"}
    assert set(rec["source"]) == {"same", "donor"}
    same, don = rec[rec["source"] == "same"], rec[rec["source"] == "donor"]
    assert (same["donor"] == same["problem"]).all()
    assert (don["donor"] != don["problem"]).all() and (don["donor_answer"] != don["answer"]).all()
    assert don.groupby("problem")["donor"].nunique().max() == 1  # one fixed donor per problem
    # the baseline rows are the same in every config of a target language
    none = rec[(rec["condition"] == "none") & (rec["direction"] == "en<-zh")]
    assert none.groupby("problem")["text"].nunique().max() == 1
    names = sorted(p.name for p in (out / "tables").iterdir())
    assert "table_L1_k4_ot_zh-from-en.md" in names and "table_L0_k4_mean_en-from-zh.tsv" in names
    assert "table_L1_k4_ot_zh-from-en_donor.md" in names and "table_L0_k4_mean_en-from-zh_donor.tsv" in names
    assert len(names) == 32
    assert "Donor (answer)" in (out / "tables" / "table_L1_k4_mean_en-from-zh_donor.md").read_text()
    assert {"z_answer_change_lo", "mcnemar_answer_p", "verdict", "random_answer_change", "source",
            "z_transfer_lo", "random_transfer_hi", "mcnemar_transfer_p"} <= set(met.columns)
    assert met[met["source"] == "donor"]["z_transfer"].notna().all()
    # every verdict is the one its configuration's records give (recomputed from records.tsv)
    keys = ["layer", "k", "alignment", "direction", "source"]
    for (_, m), (key, g) in zip(met.iterrows(), rec.groupby(keys, sort=False)):
        assert [m[c] for c in keys] == list(key)
        cfg = {**dict(zip(keys, key)), "primary": m["primary"]}
        assert P.config_result(g.reset_index(drop=True), cfg)["verdict"] == m["verdict"], key
    text = (out / "verdict.md").read_text()
    assert "Headline, the pre-registered primary configuration" in text and "double dissociation =" in text
    assert "Corrected design" in text and "Z carries the problem" in text and "80%" in text
    assert "Donor design" in (out / "metrics.md").read_text()


def test_run_patching_single_source(tiny, tmp_path):
    out = tmp_path / "out"
    _run_grid(tiny, out, masks=[tiny / "L1.h5"], layers=[1], ks=[4], alignments=("mean",), directions=("en<-zh",),
              n_random=1, max_new_tokens=3, sources=("donor",))
    assert pd.read_csv(out / "metrics.tsv", sep="\t")["source"].tolist() == ["donor"]
    assert sorted(p.name for p in (out / "tables").iterdir()) == ["table_L1_k4_mean_en-from-zh_donor.md",
                                                                  "table_L1_k4_mean_en-from-zh_donor.tsv"]
    assert "Corrected design" in (out / "verdict.md").read_text()


def test_run_patching_rejects_foreign_store(tiny, tmp_path):
    from zhunt.errors import ZhuntError
    from zhunt.models.organism import make_organism_prompt_table

    make_organism_prompt_table(tmp_path / "other.tsv", n=6, seed=99)
    with pytest.raises(ZhuntError, match="tokenizes differently|lacks prompt"):
        _run_grid(tiny, tmp_path, masks=[tiny / "L1.h5"], layers=[1], ks=[4], alignments=("mean",),
                  directions=("en<-zh",), n_random=1, max_new_tokens=2, prompts=tmp_path / "other.tsv")


# ------------------------------------------------------------------------------- a real effect is found
def _full_patch_effect(model_dir, tmp_path, layer, n=16):
    """Full-patch each English prompt with ANOTHER problem's Chinese mean at ``layer``."""
    from zhunt.models.hooks import capture
    from zhunt.models import get_adapter, load_model
    from zhunt.models.organism import make_organism_prompt_table
    from zhunt.data.prompts import load_prompt_table, load_templates, render_prompts, to_long
    from zhunt.data.answers import extract_answer

    make_organism_prompt_table(tmp_path / "p.tsv", n=n, seed=5)
    table = load_prompt_table(tmp_path / "p.tsv", ["en", "zh"])
    tpl = load_templates(TEMPLATES)
    en = render_prompts(to_long(table, ["en"]), "organism", tpl)
    zh = render_prompts(to_long(table, ["zh"]), "organism", tpl)
    model, tok = load_model(model_dir, device="cpu")
    layers = get_adapter(model).layers
    means = []
    with torch.no_grad():
        for text in zh:
            with capture(layers, [layer]) as cap:
                model(**tok([text], return_tensors="pt"))
            means.append(cap[layer][0][0].mean(0))
    answers = table["answer"].tolist()
    donor = [next(j for j in list(range(i + 1, n)) + list(range(i)) if answers[j] != answers[i]) for i in range(n)]
    base = generate(model, tok, en, max_new_tokens=8)
    patched = generate(model, tok, en, max_new_tokens=8, layer_module=layer,
                       edits=[SubspaceEdit(None, means[donor[i]], "full") for i in range(n)])
    a0 = [extract_answer(r["text"], "en") for r in base]
    a1 = [extract_answer(r["text"], None) for r in patched]
    accuracy = np.mean([a == b for a, b in zip(a0, answers)])
    changed = np.mean([a != b for a, b in zip(a0, a1)])
    return accuracy, changed


@pytest.mark.skipif(not (ORGANISM / "model.safetensors").is_file(), reason="no trained organism at /tmp")
def test_full_patch_with_other_problem_changes_answer_on_organism(tmp_path):
    accuracy, changed = _full_patch_effect(ORGANISM, tmp_path, layer=3)
    assert accuracy >= 0.9
    assert changed >= 0.75


@pytest.mark.slow
def test_full_patch_with_other_problem_changes_answer_on_fresh_organism(tmp_path):
    from zhunt.models import organism

    organism.train_organism(tmp_path / "m", n_layers=3, hidden_size=64, n_heads=4, n_kv_heads=2,
                            intermediate_size=256, steps=300, batch_size=64, warmup_steps=20, eval_n=20,
                            log_every=100, seed=0, threads=1)
    _, changed = _full_patch_effect(tmp_path / "m", tmp_path, layer=1)
    assert changed >= 0.6
