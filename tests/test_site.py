"""The site convention (zhunt.models.site): mask layer l <-> store hidden index <-> the hook's stream, and
for every Z-based stage: layer l is read at hidden index l at site input and l + 1 at site output."""

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_allclose

from zhunt.weights.masks import write_masks
from zhunt.models.site import DEFAULT_SITE, SITES, hidden_index
from zhunt.data.store import ActivationStore, StoreWriter
from zhunt.subspace import random_subspace


def test_hidden_index_convention():
    assert DEFAULT_SITE == "input" and SITES == ("input", "output")
    assert [hidden_index(l) for l in range(3)] == [0, 1, 2]
    assert [hidden_index(l, "output") for l in range(3)] == [1, 2, 3]
    with pytest.raises(ValueError):
        hidden_index(1, "middle")
    with pytest.raises(ValueError):
        hidden_index(-1)


# --------------------------------------------------------------------------- a real (random-init) model
def test_mask_layer_store_index_and_hooks_agree(make_tiny_qwen2_folder, tmp_path):
    """On a random-init Qwen2 (where consecutive streams differ): store index hidden_index(l, "input")
    is what a forward pre-hook on layers[l] sees and what layer l's attention projections (whose
    kernel W_Q^T W_K builds mask l, zhunt.weights.masks) read after the input norm; hidden_index(l, "output")
    is what a forward hook on layers[l] returns."""
    from transformers import PreTrainedTokenizerFast

    from zhunt.data.extraction import extract_to_store
    from zhunt.models import get_adapter

    folder, model = make_tiny_qwen2_folder(3, seed=1)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)  # the byte-level BPE it was saved with
    ad = get_adapter(model)
    prompts = pd.DataFrame({"id": ["a", "b"], "lang": ["en", "zh"], "text": ["What is 2 plus 3?", "二加三等于五"]})
    store_path = tmp_path / "acts.h5"
    extract_to_store(model, tok, ad.layers, prompts, store_path, batch_size=2)
    ids = torch.tensor([tok(prompts["text"][0])["input_ids"]])
    for l in range(ad.num_layers):
        seen = {}
        layer = ad.layers[l]
        hooks = [
            layer.register_forward_pre_hook(
                lambda m, a, kw: seen.__setitem__("pre", (a[0] if a else kw["hidden_states"]).detach().clone()),
                with_kwargs=True),
            layer.register_forward_hook(
                lambda m, a, out: seen.__setitem__("out", (out[0] if isinstance(out, tuple) else out).detach().clone())),
            layer.self_attn.q_proj.register_forward_pre_hook(
                lambda m, a: seen.__setitem__("q_in", a[0].detach().clone())),
        ]
        try:
            with torch.no_grad():
                model(input_ids=ids)
        finally:
            for h in hooks:
                h.remove()
        with ActivationStore(store_path) as st:
            h_in = st.tokens("a", "en", hidden_index(l, "input"))
            h_out = st.tokens("a", "en", hidden_index(l, "output"))
        assert_allclose(seen["pre"][0].numpy(), h_in, rtol=1e-4, atol=1e-5)
        assert_allclose(seen["out"][0].numpy(), h_out, rtol=1e-4, atol=1e-5)
        assert np.abs(h_in - h_out).max() > 1e-2  # the two sites really differ here
        with torch.no_grad():
            normed = layer.input_layernorm(torch.from_numpy(h_in)[None]).numpy()[0]
        assert_allclose(seen["q_in"][0].numpy(), normed, rtol=1e-4, atol=1e-5)
        # the adapter's folded norm weight is the one applied to that stream
        w = ad.layer_weights(l)
        rms = np.sqrt(np.mean(h_in.astype(np.float64) ** 2, axis=1, keepdims=True) + model.config.rms_norm_eps)
        assert_allclose(normed, h_in / rms * w.attn_norm.numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- every stage
D, L, N = 8, 3, 8
LAYER = 1


@pytest.fixture(scope="module")
def site_store(tmp_path_factory):
    """A store whose hidden indices hold different (random) data, plus masks of layers 1 and 2."""
    tmp = tmp_path_factory.mktemp("site")
    rng = np.random.default_rng(0)
    meta, rows, tok, special = [], [[] for _ in range(L + 1)], [], []
    shared = rng.standard_normal((N, D))
    for i in range(N):
        for lang in ("zh", "en"):
            T = 4 + (i % 2)
            meta.append({"prompt_id": f"p{i}", "lang": lang, "length": T + 1, "category": "c", "answer": "1"})
            for j in range(L + 1):
                toks = (j + 1) * shared[i] + rng.standard_normal((T, D)) * (0.5 + j)
                rows[j].append(np.vstack([rng.standard_normal(D) * 30, toks]))
            tok += [0] + list(rng.integers(5, 50, T))
            special += [True] + [False] * T
    with StoreWriter(tmp / "acts.h5", num_layers=L, hidden_size=D, n_rows_total=len(tok)) as w:
        w.append(meta, [np.concatenate(r) for r in rows], np.array(tok), np.array(special))
    masks = {}
    for l in (1, 2):
        V = {k: random_subspace(k, D, l) for k in (2, 4)}
        write_masks(tmp / f"L{l}.h5", {"multihead": {"sigma": np.linspace(2, 1, D), "V": V}}, {"layer": l})
        masks[l] = tmp / f"L{l}.h5"
    return tmp, tmp / "acts.h5", masks


@pytest.fixture()
def reads(monkeypatch):
    """Spy: every hidden index a stage reads (ActivationStore.hidden and .tokens)."""
    seen = []
    hidden, tokens = ActivationStore.hidden, ActivationStore.tokens

    def spy_hidden(self, j):
        seen.append(int(j))
        return hidden(self, j)

    def spy_tokens(self, prompt_id, lang, j):
        seen.append(int(j))
        return tokens(self, prompt_id, lang, j)

    monkeypatch.setattr(ActivationStore, "hidden", spy_hidden)
    monkeypatch.setattr(ActivationStore, "tokens", spy_tokens)
    return seen


@pytest.mark.parametrize("site", SITES)
def test_phase2_reads_the_site(site_store, reads, site):
    from test_zspace import measure
    from zhunt.activations.zspace import PairDeltas, paired_pooled, phase2

    tmp, store, masks = site_store
    res = measure(phase2, store, masks, [LAYER], [2], kinds=("multihead",), n_random=20, site=site)
    j = LAYER if site == "input" else LAYER + 1
    assert set(reads) == {j, 0}  # the site and the embedding reference, nothing else
    t = res.table
    row = t[t["site"] == site]
    assert (row["hidden_index"] == j).all() and set(t["site"]) == {site, "embedding"}
    with ActivationStore(store) as st:
        for jj in (j, 0):
            expect = PairDeltas(*paired_pooled(st, jj, ("zh", "en"), "mean")[:2]).ratio_full
            got = t[(t["hidden_index"] == jj) & (t["pooling"] == "mean")]["ratio_full"]
            assert_allclose(got, expect, rtol=1e-12)


def test_phase2_site_variant_rows(site_store):
    from test_zspace import measure
    from zhunt.activations.zspace import phase2

    tmp, store, masks = site_store
    res = measure(phase2, store, masks, [LAYER], [2], kinds=("multihead",), n_random=20, site="input",
                  site_variants=["output", "input"])
    t = res.table
    assert list(dict.fromkeys(t["site"])) == ["input", "output", "embedding"]  # primary first
    by = t.set_index(["site", "pooling"])["ratio_full"]
    assert by[("input", "mean")] != by[("output", "mean")]
    assert list(dict.fromkeys(res.summary["site"])) == ["input", "output", "embedding"]


@pytest.mark.parametrize("site", SITES)
def test_datadriven_reads_the_site(site_store, reads, site):
    from test_zspace import measure
    from zhunt.activations.zspace import datadriven

    tmp, store, masks = site_store
    t = measure(datadriven, store, masks, [LAYER], [2], kinds=("multihead",), site=site, n_random=20)
    j = hidden_index(LAYER, site)
    assert set(reads) == {j} and (t["hidden_index"] == j).all() and (t["site"] == site).all()


def _bridge(tmp, name, store, masks, *, site, site_variants=(), token_level=True):
    """The bridge stage on layer LAYER, k = 2, three permutations, outputs named ``tmp/name*``."""
    from zhunt.stages.bridge import run_bridge

    fig = lambda n: [str(tmp / f"{name}{n}.pdf"), str(tmp / f"{name}{n}.png")]  # noqa: E731
    outputs = {"table": [str(tmp / f"{name}.tsv"), str(tmp / f"{name}.md")],
               "extra": [str(tmp / f"{name}.spectra.tsv"), str(tmp / f"{name}.null.tsv")],
               "fig_spectra": fig("_spectra"), "fig_loo": fig("_loo"), "fig_null": fig("_null")}
    run_bridge({"store": store, "masks": [masks[LAYER]]},
               {"layers": [LAYER], "ks": [2], "n_permutations": 3, "site": site, "site_variants": list(site_variants)},
               outputs, wildcards={"model": "m"}, token_level=token_level)


@pytest.mark.parametrize("site", SITES)
def test_bridge_reads_the_site(site_store, reads, site):
    tmp, store, masks = site_store
    _bridge(tmp, "b", store, masks, site=site)
    j = hidden_index(LAYER, site)
    assert set(reads) == {j}
    for name in ("b.tsv", "b.spectra.tsv", "b.null.tsv"):
        t = pd.read_csv(tmp / name, sep="\t")
        assert (t["site"] == site).all() and (t["hidden_index"] == j).all(), name
    assert len(pd.read_csv(tmp / "b.tsv", sep="\t")) == 2 * 2 * 4  # direction x level x estimator


def test_bridge_site_variants(site_store, reads):
    tmp, store, masks = site_store
    _bridge(tmp, "bv", store, masks, site="input", site_variants=["output"], token_level=False)
    t = pd.read_csv(tmp / "bv.tsv", sep="\t")
    assert set(reads) == {LAYER, LAYER + 1}
    assert list(dict.fromkeys(t["site"])) == ["input", "output"]
    assert t.groupby("site")["hidden_index"].first().to_dict() == {"input": LAYER, "output": LAYER + 1}


def test_ard_reads_the_site(site_store, reads):
    import h5py

    from zhunt.activations.ard import TSV_COLUMNS, ard_layer, load_token_clouds
    from zhunt.stages.ard import write_run_file
    from zhunt.weights.masks import read_mask

    tmp, store, masks = site_store
    with ActivationStore(store) as st:
        for site in SITES:
            reads.clear()
            ids, clouds = load_token_clouds(st, LAYER, site=site)
            assert set(reads) == {hidden_index(LAYER, site)}
            tok = st.tokens(ids[0], "zh", hidden_index(LAYER, site))
            assert_allclose(clouds["zh"][0], tok[~st.token_mask(ids[0], "zh")])
    reads.clear()
    with ActivationStore(store) as st:
        res = ard_layer(st, read_mask(masks[LAYER], "multihead", 2), "m", LAYER, [0.1], min_steps=1, max_steps=2,
                        objectives=("wellposed",), inits=("cold",), bases=("coord",), k_warm=2, device="cpu",
                        n_neg=2, site="input", site_variants=["output"])
    assert set(reads) == {LAYER, LAYER + 1}
    write_run_file(tmp / "a.h5", res)
    t = res.table
    assert list(t.columns) == ["site", "hidden_index"] + TSV_COLUMNS
    assert t[["site", "hidden_index"]].values.tolist() == [["input", LAYER], ["output", LAYER + 1]]
    with h5py.File(tmp / "a.h5", "r") as f:
        assert f.attrs["site"] == "input" and f.attrs["hidden_index"] == LAYER
        assert f["sites/output"].attrs["hidden_index"] == LAYER + 1
        assert "wellposed/coord/cold/lambda0.1/log_lengthscale" in f
        assert "sites/output/wellposed/coord/cold/lambda0.1/log_lengthscale" in f
    assert len(res.table) == 2


def test_decomposition_names_the_basis_site(site_store):
    from zhunt.activations.decomposition import decomposition
    from zhunt.weights.masks import mask_layer, read_mask

    tmp, store, masks = site_store
    R = {}
    for site in SITES:
        with ActivationStore(store) as st:
            R[site] = decomposition(st, {2: read_mask(masks[LAYER], "multihead", 2)}, mask_layer(masks[LAYER]),
                                    n_random=5, site=site)
        assert (R[site]["site"] == site).all() and (R[site]["basis_layer"] == LAYER).all()
        assert (R[site]["hidden_index"] == hidden_index(LAYER, site)).all()
    # layer updates h[l+1] - h[l] do not depend on the site
    assert_allclose(R["input"]["R"], R["output"]["R"])


def test_theory_layer_labels_follow_the_site(site_store, tmp_path):
    from test_theory import theory_of
    from zhunt.activations.theory import site_layer

    assert site_layer([0, 1, 3], "input", 3).tolist() == [0, 1, pd.NA]
    assert site_layer([0, 1, 3], "output", 3).tolist() == [pd.NA, 0, 2]
    _, store, _ = site_store
    for site in SITES:
        tables = theory_of(store, pca_dim=2, n_folds=2, site=site).tables
        for name in ("snr", "nn", "crossmap"):
            t = tables[name]
            assert (t["site"] == site).all() and (t["hidden_index"] == t["j"]).all()
            lay = t["layer"].dropna().astype(int)
            jj = t.loc[lay.index, "j"]
            assert (lay == (jj if site == "input" else jj - 1)).all(), name
