"""Tests for zhunt.models.hooks: capture and patch decoder-layer outputs (also inside generate)."""

import pytest
import torch
from torch import nn

from zhunt.models.hooks import (
    capture,
    capture_hidden_states,
    layer_hidden,
    patch,
    replace_rows,
    with_layer_hidden,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(cfg).eval()


PROMPTS = ["what is 23 plus 14? a:", "hi", "abc def", "q: 7 times 8?"]


def batch(tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    special = torch.isin(enc["input_ids"], torch.tensor(tok.all_special_ids))
    prompt_mask = enc["attention_mask"].bool() & ~special
    return enc, prompt_mask


def generate(model, enc, n=6, **kw):
    # min_new_tokens: a random model may emit EOS everywhere and stop early
    return model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                          pad_token_id=0, **kw)


# ----------------------------------------------------------------------------- helpers
def test_replace_rows_only_masked():
    h = torch.randn(2, 3, 4)
    new = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    out = replace_rows(h, new, mask)
    assert torch.equal(out[mask], new[mask])
    assert torch.equal(out[~mask], h[~mask])
    with pytest.raises(ValueError):
        replace_rows(h, new[:, :2], mask)


def test_layer_hidden_tensor_and_tuple():
    h = torch.zeros(1, 2, 3)
    assert layer_hidden(h) is h
    assert layer_hidden((h, "x")) is h
    new = torch.ones(1, 2, 3)
    assert with_layer_hidden(h, new) is new
    out = with_layer_hidden((h, "x", None), new)
    assert isinstance(out, tuple) and out[0] is new and out[1:] == ("x", None)


# ----------------------------------------------------------------------------- capture
def test_capture_matches_output_hidden_states(model, tok):
    enc = tok(["what is 2 plus 2?"], return_tensors="pt")
    layers = model.model.layers
    with torch.inference_mode():
        model(**enc, output_hidden_states=True)  # transformers installs its capture hooks lazily
    n_hooks = [len(layer._forward_hooks) for layer in layers]
    n_pre = len(layers[0]._forward_pre_hooks)
    with torch.inference_mode(), capture(layers) as cap, capture_hidden_states(layers) as hc:
        out = model(**enc, output_hidden_states=True)
    hs = out.hidden_states
    L = len(layers)
    assert len(hs) == L + 1
    assert torch.equal(hc.hidden[0][0], hs[0])
    for l in range(L - 1):
        assert torch.equal(cap[l][0], hs[l + 1])
        assert torch.equal(hc.hidden[l + 1][0], hs[l + 1])
    # transformers 5.x: the last hidden_states entry is taken after the final norm
    assert not torch.allclose(cap[L - 1][0], hs[L])
    assert torch.allclose(model.model.norm(cap[L - 1][0]), hs[L], atol=1e-6)
    # our hooks are removed on exit (transformers' own capture hooks stay installed)
    assert [len(layer._forward_hooks) for layer in layers] == n_hooks
    assert len(layers[0]._forward_pre_hooks) == n_pre


# ----------------------------------------------------------------------------- patch
def test_identity_patch_same_generation(model, tok):
    enc, pm = batch(tok)
    ref = generate(model, enc)
    for positions in ("prompt", "all"):
        with patch(model.model.layers[1], lambda h, ctx: h.clone(), positions=positions,
                   prompt_mask=pm) as hd:
            got = generate(model, enc)
        assert torch.equal(got, ref), positions
        T = enc["input_ids"].shape[1]
        c0 = hd.contexts[0]
        assert c0.is_prefill and c0.start == 0 and c0.prompt_len == T
        assert c0.mask.shape == (len(PROMPTS), T)
        assert torch.equal(c0.mask, pm)
        # with the KV cache: decode steps are (B, 1, d) at positions T, T+1, ...
        steps = hd.contexts[1:]
        assert len(steps) == 5
        assert [c.start for c in steps] == list(range(T, T + 5))
        assert all(c.mask.shape == (len(PROMPTS), 1) and not c.is_prefill for c in steps)
        assert all(bool(c.mask.all()) == (positions == "all") for c in steps)


def test_real_change_changes_generation(model, tok):
    enc, pm = batch(tok)
    ref = generate(model, enc)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(64, generator=g) * 50
    with patch(model.model.layers[0], lambda h, ctx: h + v, prompt_mask=pm) as hd:
        got = generate(model, enc)
    assert not torch.equal(got, ref)
    # prompt-only: patch applied at prefill only, the cache carries it
    assert hd.contexts[0].mask.any() and not any(c.mask.any() for c in hd.contexts[1:])


def test_pads_and_special_never_changed(model, tok):
    enc, pm = batch(tok)
    assert (~enc["attention_mask"].bool()).any(), "test needs left padding"
    seen = {}

    def fn(h, ctx):
        seen.setdefault("in", h.clone())
        return h + 100.0

    layer = model.model.layers[1]
    with torch.inference_mode():
        # a plain forward hook registered first (appended) sees the patched output,
        # because patch() prepends its hook
        with capture(model.model.layers, [1]) as cap, patch(layer, fn, prompt_mask=pm):
            model(**enc)
    h_in, h_out = seen["in"], cap[1][0]
    assert torch.equal(h_out[~pm], h_in[~pm])  # pads and BOS: bitwise untouched
    assert torch.allclose(h_out[pm], h_in[pm] + 100.0)


def test_patch_runs_before_output_hidden_states_capture(model, tok):
    enc, pm = batch(tok)
    with torch.inference_mode():
        model(**enc, output_hidden_states=True)  # installs transformers' capture hooks
        with patch(model.model.layers[0], lambda h, ctx: torch.zeros_like(h), prompt_mask=pm):
            out = model(**enc, output_hidden_states=True)
    assert torch.count_nonzero(out.hidden_states[1][pm]) == 0


def test_positions_all_changes_decode_steps(model, tok):
    enc, pm = batch(tok)
    v = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 50
    calls = []

    def fn(h, ctx):
        calls.append((h.shape[1], ctx.start, ctx.is_prefill))
        return h + v

    with patch(model.model.layers[0], fn, prompt_mask=pm):
        prompt_only = generate(model, enc)
    n_prompt_calls = len(calls)
    calls.clear()
    with patch(model.model.layers[0], fn, positions="all", prompt_mask=pm):
        everywhere = generate(model, enc)
    T = enc["input_ids"].shape[1]
    assert n_prompt_calls == 1
    assert calls[0] == (T, 0, True)
    assert calls[1:] == [(1, T + i, False) for i in range(5)]
    assert not torch.equal(prompt_only, everywhere)


def test_patch_without_kv_cache(model, tok):
    """Without the cache every step is a full pass; prompt positions stay the same."""
    enc, pm = batch(tok)
    v = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 50
    with patch(model.model.layers[0], lambda h, ctx: h + v, prompt_mask=pm):
        cached = generate(model, enc, n=4)
    with patch(model.model.layers[0], lambda h, ctx: h + v, prompt_mask=pm) as hd:
        uncached = generate(model, enc, n=4, use_cache=False)
    assert torch.equal(cached, uncached)
    T = enc["input_ids"].shape[1]
    assert [c.mask.shape[1] for c in hd.contexts] == [T, T + 1, T + 2, T + 3]
    assert all(c.is_prefill and c.start == 0 for c in hd.contexts)
    assert all(not c.mask[:, T:].any() for c in hd.contexts)


class TupleLayer(nn.Module):
    """An old-style decoder layer returning (hidden_states, extra)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return (self.lin(x), "attn-weights")


class TensorLayer(TupleLayer):
    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("cls", [TupleLayer, TensorLayer])
def test_patch_and_capture_tuple_or_tensor(cls):
    torch.manual_seed(0)
    layer = cls()
    x = torch.randn(2, 3, 4)
    ref = layer(x)
    ref_h = layer_hidden(ref)
    pm = torch.tensor([[False, True, True], [True, True, False]])
    with capture([layer], [0]) as cap, patch(layer, lambda h, ctx: h * 0 + 7, prompt_mask=pm):
        out = layer(x)
    assert type(out) is type(ref)
    if isinstance(out, tuple):
        assert out[1] == "attn-weights"
    h = layer_hidden(out)
    assert torch.equal(h[~pm], ref_h[~pm])
    assert torch.all(h[pm] == 7)
    assert torch.equal(cap[0][0], h)


def test_patch_rejects_bad_arguments():
    layer = TensorLayer()
    with pytest.raises(ValueError):
        with patch(layer, lambda h, c: h, positions="generated"):
            pass
    with pytest.raises(ValueError):
        with patch(layer, lambda h, c: h, prompt_mask=torch.ones(3, dtype=torch.bool)):
            pass
    with patch(layer, lambda h, c: h, prompt_mask=torch.ones(5, 3, dtype=torch.bool)):
        with pytest.raises(ValueError, match="batch size"):
            layer(torch.randn(2, 3, 4))
    with patch(layer, lambda h, c: h, prompt_mask=torch.ones(2, 5, dtype=torch.bool)):
        with pytest.raises(ValueError, match="prefill"):
            layer(torch.randn(2, 3, 4))
    with pytest.raises(IndexError):
        with capture([layer], [1]):
            pass


# ----------------------------------------------------------------------------- sites
def test_sites_see_store_hidden_index(model, tok, tmp_path):
    """Pre-hook at layers[l] (site input) sees store index l; the forward hook (output) sees l + 1."""
    import pandas as pd

    from zhunt.data.extraction import extract_to_store
    from zhunt.models.site import hidden_index
    from zhunt.data.store import ActivationStore

    prompts = pd.DataFrame({"id": [f"p{i}" for i in range(len(PROMPTS))], "lang": ["en"] * len(PROMPTS),
                            "text": PROMPTS})
    path = tmp_path / "s.h5"
    extract_to_store(model, tok, model.model.layers, prompts, path, batch_size=2)
    enc, pm = batch(tok)
    real = enc["attention_mask"].bool()
    with ActivationStore(path) as store:
        for l in range(len(model.model.layers)):
            for site in ("input", "output"):
                seen = []
                with torch.inference_mode(), patch(model.model.layers[l], lambda h, ctx: seen.append(h) or h,
                                                   prompt_mask=real, site=site):
                    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                    model(**enc, position_ids=pos)
                j = hidden_index(l, site)
                assert j == (l if site == "input" else l + 1)
                for b in range(len(PROMPTS)):
                    ref = store.tokens(f"p{b}", "en", j)
                    torch.testing.assert_close(seen[0][b][real[b]], torch.from_numpy(ref), atol=1e-5, rtol=0)
            # the two sites differ (layer l changes the stream)
            assert not torch.allclose(torch.from_numpy(store.tokens("p0", "en", l)),
                                      torch.from_numpy(store.tokens("p0", "en", l + 1)), atol=1e-3)


def test_input_site_edit_flows_into_the_layer(model, tok):
    """An edit at the input of layers[l] changes that layer's output; at its output it does not."""
    enc, pm = batch(tok)
    v = torch.randn(64, generator=torch.Generator().manual_seed(5)) * 5
    layer = model.model.layers[1]
    outs = {}
    for site in ("input", "output"):
        with torch.inference_mode(), capture(model.model.layers, [0, 1]) as cap, \
                patch(layer, lambda h, ctx: h + v, prompt_mask=pm, site=site):
            model(**enc)
        outs[site] = (cap[0][0], cap[1][0])
    with torch.inference_mode(), capture(model.model.layers, [0, 1]) as cap:
        model(**enc)
    plain0, plain1 = cap[0][0], cap[1][0]
    # site input: layers[0]'s output is untouched (the pre-hook rewrites layer 1's argument only)
    assert torch.equal(outs["input"][0], plain0)
    assert not torch.allclose(outs["input"][1][pm], plain1[pm] + v, atol=1e-3)  # went through the layer
    # site output: layer 1's output is exactly the plain output plus v at patched rows
    torch.testing.assert_close(outs["output"][1][pm], plain1[pm] + v, atol=1e-5, rtol=0)
    assert torch.equal(outs["output"][1][~pm], plain1[~pm])


def test_input_site_in_generate_prompt_and_all(model, tok):
    """Site input inside generate: prefill (B, T, d) then (B, 1, d) decode steps; identity is a no-op."""
    enc, pm = batch(tok)
    ref = generate(model, enc)
    calls = []

    def fn(h, ctx):
        calls.append((h.shape[1], ctx.start, ctx.is_prefill))
        return h.clone()

    for positions in ("prompt", "all"):
        calls.clear()
        with patch(model.model.layers[2], fn, positions=positions, prompt_mask=pm, site="input"):
            got = generate(model, enc)
        assert torch.equal(got, ref)
        T = enc["input_ids"].shape[1]
        assert calls[0] == (T, 0, True)
        assert calls[1:] == ([(1, T + i, False) for i in range(5)] if positions == "all" else [])
    v = torch.randn(64, generator=torch.Generator().manual_seed(2)) * 50
    with patch(model.model.layers[0], lambda h, ctx: h + v, prompt_mask=pm, site="input"):
        a = generate(model, enc)
    with patch(model.model.layers[0], lambda h, ctx: h + v, prompt_mask=pm, site="input"):
        b = generate(model, enc, n=6, use_cache=False)
    assert not torch.equal(a, ref) and torch.equal(a, b)


def test_exact_interchange_at_input_site_reproduces_donor(model, tok):
    """Replacing every position of the stream entering layers[l] by the donor's own index-l states
    gives the donor's logits (prompts of the same length): the exact interchange property."""
    base, donor = "abc def", "xyz 123"
    eb, ed = tok([base], return_tensors="pt"), tok([donor], return_tensors="pt")
    assert eb["input_ids"].shape == ed["input_ids"].shape
    with torch.inference_mode(), capture_hidden_states(model.model.layers) as hc:
        donor_logits = model(**ed).logits
        base_logits = model(**eb).logits
    for l in range(len(model.model.layers)):
        s = hc.hidden[l][0]  # donor, hidden index l = input of layers[l]
        with torch.inference_mode(), patch(model.model.layers[l], lambda h, ctx: s, site="input"):
            got = model(**eb).logits
        torch.testing.assert_close(got, donor_logits, atol=1e-5, rtol=0)
        assert not torch.allclose(base_logits, donor_logits, atol=1e-3)


class KwargLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, hidden_states, scale=1.0):
        return self.lin(hidden_states) * scale


def test_input_site_positional_and_keyword_hidden_states():
    torch.manual_seed(0)
    layer = KwargLayer()
    x = torch.randn(2, 3, 4)
    pm = torch.tensor([[False, True, True], [True, True, False]])
    expect = layer(torch.where(pm[..., None], torch.zeros_like(x), x), scale=2.0)
    for call in (lambda: layer(x, scale=2.0), lambda: layer(hidden_states=x, scale=2.0)):
        with patch(layer, lambda h, ctx: torch.zeros_like(h), prompt_mask=pm, site="input"):
            torch.testing.assert_close(call(), expect)
    with pytest.raises(ValueError):
        with patch(layer, lambda h, c: h, site="middle"):
            pass
    with pytest.raises(TypeError, match="hidden_states"):
        with patch(layer, lambda h, c: h, site="input"):
            layer(None, scale=1.0)  # no tensor to edit
