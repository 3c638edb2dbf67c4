"""Tests for zhunt.data.extraction: batched extraction of all hidden states into the store."""


import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from zhunt.errors import ZhuntError
from zhunt.data.extraction import extract_to_store
from zhunt.models.batching import left_pad
from zhunt.models.hooks import capture
from zhunt.data.store import ActivationStore, StoreWriter, hidden_name

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

L, D = 3, 64




@pytest.fixture(scope="module")
def model(make_qwen2):
    return make_qwen2(L, D, 128)


@pytest.fixture(scope="module")
def prompts():
    return pd.DataFrame({
        "id": ["a", "a", "b", "b", "c", "c", "d"],
        "lang": ["en", "zh", "en", "zh", "en", "zh", "en"],
        "text": ["what is 23 plus 14? a:", "23 jia 14", "hi", "ni hao ma", "q: 7 times 8?", "7 8",
                 "a much longer prompt than the others, to force padding: 1 2 3 4 5"],
        "answer": ["37", "37", "", "", "56", "56", "x"],
        "category": ["add", "add", "greet", "greet", "mul", "mul", "other"],
    })


@pytest.fixture(scope="module")
def stores(model, tok, prompts, tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    paths = {}
    for name, bs, dt in (("b1", 1, "float32"), ("b3", 3, "float32"), ("b3h", 3, "float16")):
        paths[name] = d / f"{name}.h5"
        extract_to_store(model, tok, model.model.layers, prompts, paths[name], batch_size=bs,
                         dtype=dt, attrs={"model": "tiny-qwen2"})
    return paths


def reference(model, tok, text):
    """Unbatched, unpadded forward: hidden_states and the raw last-layer output."""
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode(), capture(model.model.layers, [L - 1]) as cap:
        out = model(input_ids=ids, output_hidden_states=True)
    return ids[0].numpy(), [h[0].numpy() for h in out.hidden_states], cap[L - 1][0][0].numpy()


def test_matches_output_hidden_states(model, tok, prompts, stores):
    for name in ("b1", "b3"):  # unpadded, and batched with left padding
        with ActivationStore(stores[name]) as st:
            assert st.num_layers == L and st.hidden_size == D
            for pid, lang, text in zip(prompts["id"], prompts["lang"], prompts["text"]):
                ids, hs, raw_last = reference(model, tok, text)
                np.testing.assert_array_equal(st.prompt_token_ids(pid, lang), ids)
                for j in range(L):
                    np.testing.assert_allclose(st.tokens(pid, lang, j), hs[j], atol=1e-5, rtol=0)
                # hidden_states[L] is taken AFTER the final norm in transformers 5.x, while the
                # store keeps the raw output of the last decoder layer at j = L
                np.testing.assert_allclose(st.tokens(pid, lang, L), raw_last, atol=1e-5, rtol=0)
                normed = model.model.norm(torch.from_numpy(st.tokens(pid, lang, L))).detach().numpy()
                np.testing.assert_allclose(normed, hs[L], atol=1e-4, rtol=0)


def test_batched_equals_unbatched(stores):
    with ActivationStore(stores["b1"]) as a, ActivationStore(stores["b3"]) as b:
        pd.testing.assert_frame_equal(a.prompts, b.prompts)
        np.testing.assert_array_equal(a.token_ids, b.token_ids)
        for j in range(L + 1):
            np.testing.assert_allclose(a.hidden(j), b.hidden(j), atol=1e-5, rtol=0)


def test_left_padding_position_ids():
    ids, mask, pos = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def test_index_order_and_special(tok, prompts, stores):
    with ActivationStore(stores["b3"]) as st:
        p = st.prompts
        # rows are in the ORIGINAL prompt order although batches were length-sorted
        assert list(p["prompt_id"]) == list(prompts["id"])
        assert list(p["lang"]) == list(prompts["lang"])
        assert list(p["answer"]) == list(prompts["answer"])
        assert list(p["category"]) == list(prompts["category"])
        lens = [len(tok(t)["input_ids"]) for t in prompts["text"]]
        assert list(p["length"]) == lens
        assert list(p["offset"]) == list(np.concatenate([[0], np.cumsum(lens)[:-1]]))
        # BOS (the first token of each prompt) is the only special token
        assert st.special.sum() == len(prompts)
        assert st.special[p["offset"].to_numpy()].all()
        assert st.attrs["model"] == "tiny-qwen2"
        assert st.attrs["batch_size"] == 3
        with h5py.File(stores["b3"], "r") as f:
            for j in range(L + 1):
                assert f[hidden_name(j)].chunks[1] == D


def test_reader_on_extracted_store(stores, prompts):
    with ActivationStore(stores["b3"]) as st:
        H = st.hidden(2)
        en = st.prompts[st.prompts["lang"] == "en"]
        mean = np.stack([H[o + 1:o + n].mean(0) for o, n in zip(en["offset"], en["length"])])
        last = np.stack([H[o + n - 1] for o, n in zip(en["offset"], en["length"])])
        np.testing.assert_allclose(st.pooled(2, "en"), mean, atol=1e-5)
        np.testing.assert_array_equal(st.pooled(2, "en", pooling="last"), last)
        np.testing.assert_allclose(st.pooled_update(1, "zh"),
                                   st.pooled(2, "zh") - st.pooled(1, "zh"), atol=1e-6)
        np.testing.assert_allclose(st.updates(0), st.hidden(1) - st.hidden(0))


def test_float16_store(stores):
    with ActivationStore(stores["b3"]) as a, ActivationStore(stores["b3h"]) as b:
        assert b.dtype == "float16"
        for j in range(L + 1):
            ref = a.hidden(j)
            np.testing.assert_allclose(b.hidden(j), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_deterministic(model, tok, prompts, stores, tmp_path):
    again = tmp_path / "again.h5"
    extract_to_store(model, tok, model.model.layers, prompts, again, batch_size=3)
    with h5py.File(stores["b3"], "r") as a, h5py.File(again, "r") as b:
        for j in range(L + 1):
            assert np.array_equal(a[hidden_name(j)][()], b[hidden_name(j)][()])


def test_exception_mid_write_leaves_nothing(model, tok, prompts, tmp_path, monkeypatch):
    calls = {"n": 0}
    orig = StoreWriter.append

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            assert any(p.name.endswith(".h5.tmp") for p in tmp_path.iterdir())
            raise RuntimeError("disk on fire")
        return orig(self, *a, **k)

    monkeypatch.setattr(StoreWriter, "append", flaky)
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="disk on fire"):
        extract_to_store(model, tok, model.model.layers, prompts, out, batch_size=2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # temp file removed too
    assert not model.training


def test_bad_inputs(model, tok, prompts, tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(ZhuntError, match="lacks column 'text'"):
        extract_to_store(model, tok, model.model.layers, prompts.drop(columns="text"), out)
    dup = pd.concat([prompts, prompts.iloc[:1]])
    with pytest.raises(ZhuntError, match="duplicate"):
        extract_to_store(model, tok, model.model.layers, dup, out)
    empty = pd.DataFrame({"id": ["e"], "lang": ["en"], "text": [""]})
    with pytest.raises(ZhuntError, match="no tokens"):
        extract_to_store(model, tok, model.model.layers, empty, out, add_special_tokens=False)
    with pytest.raises(ZhuntError, match="dtype"):
        extract_to_store(model, tok, model.model.layers, prompts, out, dtype="int8")
    assert list(tmp_path.iterdir()) == []


def test_gemma3_embedding_scaling_is_captured(tok, tmp_path):
    """j = 0 is what layer 0 receives: Gemma scales embeddings by sqrt(d) inside the model."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=16, intermediate_size=64, pad_token_id=0,
                           bos_token_id=1, eos_token_id=2, sliding_window=4)
    torch.manual_seed(0)
    m = Gemma3ForCausalLM(cfg).eval()
    df = pd.DataFrame({"id": ["a", "b"], "lang": ["en", "en"], "text": ["hello there", "hi"]})
    out = tmp_path / "g.h5"
    extract_to_store(m, tok, m.model.layers, df, out, batch_size=2)
    ids = tok("hello there", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hs = m(input_ids=ids, output_hidden_states=True).hidden_states
    with ActivationStore(out) as st:
        np.testing.assert_allclose(st.tokens("a", "en", 0), hs[0][0].numpy(), atol=1e-5, rtol=0)
        emb = m.get_input_embeddings().weight[ids[0]].detach().numpy()
        assert not np.allclose(st.tokens("a", "en", 0), emb)  # scaled, not the raw table
        np.testing.assert_allclose(st.tokens("a", "en", 1), hs[1][0].numpy(), atol=1e-5, rtol=0)


def test_pad_id_falls_back_from_pad_to_eos_to_zero():
    from types import SimpleNamespace

    from zhunt.models.batching import pad_id

    assert pad_id(SimpleNamespace(pad_token_id=7, eos_token_id=3)) == 7
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=3)) == 3
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=None)) == 0
