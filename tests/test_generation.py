"""Tests for zhunt.models.generation: batched greedy generation with per-prompt edits and step recording."""

import numpy as np
import pytest
import torch

from zhunt.models.generation import SubspaceEdit, generate
from zhunt.models.hooks import capture

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

PROMPTS = ["what is 23 plus 14? a:", "hi", "abc def", "q: 7 times 8?", "x", "zz top 99"]
LAYER = 1
D = 32




@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=D, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2)
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # make eos unlikely so rows run for a while
        m.lm_head.weight[2] *= 0.0
    return m


def basis(k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, k, generator=g))
    return q.T.contiguous()


def tokens(res):
    return [r["token_ids"] for r in res]


def test_identity_edit_matches_plain_generate(model, tok):
    base = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=4)
    ident = generate(model, tok, PROMPTS, max_new_tokens=8, batch_size=4, layer_module=LAYER,
                     edits=[lambda h: h] * len(PROMPTS))
    assert tokens(base) == tokens(ident)
    for p, r in zip(PROMPTS, base):
        enc = tok([p], return_tensors="pt")
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=2)
        ref = out[0, enc["input_ids"].shape[1]:].tolist()
        if 2 in ref:
            ref = ref[:ref.index(2) + 1]
        assert r["token_ids"] == ref
        assert r["n_new_tokens"] == len(ref)
        assert r["text"] == tok.decode(ref, skip_special_tokens=True)
        assert r["n_prompt_tokens"] == enc["input_ids"].shape[1]


def test_batched_equals_one_at_a_time_and_keeps_order(model, tok):
    edits = [SubspaceEdit(basis(), torch.randn(D, generator=torch.Generator().manual_seed(i)), m)
             for i, m in enumerate(["span", "complement", "full", "span", "full", "complement"])]
    edits[1] = None
    a = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, layer_module=LAYER, edits=edits)
    b = generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=1, layer_module=LAYER, edits=edits)
    assert tokens(a) == tokens(b)
    single = generate(model, tok, [PROMPTS[3]], max_new_tokens=6, layer_module=LAYER, edits=[edits[3]])
    assert single[0]["token_ids"] == a[3]["token_ids"]
    # deterministic
    assert tokens(generate(model, tok, PROMPTS, max_new_tokens=6, batch_size=4, layer_module=LAYER,
                           edits=edits)) == tokens(a)


def test_vectorised_subspace_edit_equals_per_row_callable(model, tok):
    g = torch.Generator().manual_seed(3)
    V4, V2 = basis(4, 1), basis(2, 2)  # different k in one batch (zero-padded bases)
    edits = []
    for i, p in enumerate(PROMPTS):
        n = len(p)  # one char per token, BOS excluded (special)
        src = torch.randn(n, D, generator=g) if i % 2 else torch.randn(D, generator=g)
        edits.append(SubspaceEdit([V4, V2, None][i % 3], src, ["span", "complement", "full"][i % 3]))
    wrapped = [lambda h, e=e: e(h) for e in edits]
    for positions in ("prompt", "all"):
        a = generate(model, tok, PROMPTS, max_new_tokens=5, batch_size=6, layer_module=LAYER, edits=edits,
                     positions=positions, record_layers=[2])
        b = generate(model, tok, PROMPTS, max_new_tokens=5, batch_size=6, layer_module=LAYER, edits=wrapped,
                     positions=positions, record_layers=[2])
        assert tokens(a) == tokens(b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x["states"][2], y["states"][2], atol=1e-5)


def test_pads_and_special_tokens_never_touched(model, tok):
    layer = model.model.layers[LAYER]
    seen = []

    def f(h):
        seen.append(h.shape)
        return h + 100.0

    with capture([layer]) as plain:
        generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=6)
    with capture([layer]) as edited:
        generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=6, layer_module=layer, edits=[f] * 6)
    h0, h1 = plain[0][0], edited[0][0]  # prefill (B, T, d), length-sorted rows
    enc = tok(sorted(PROMPTS, key=lambda p: -len(p)), return_tensors="pt", padding=True)
    real = enc["attention_mask"].bool()
    special = torch.isin(enc["input_ids"], torch.tensor(tok.all_special_ids))
    keep = ~real | special
    assert keep.any() and (~real).any()
    assert torch.equal(h0[keep], h1[keep])  # pads and BOS bitwise unchanged
    assert torch.allclose(h1[~keep], h0[~keep] + 100.0, atol=1e-4)
    assert sorted(s[0] for s in seen) == sorted(len(p) for p in PROMPTS)  # (T_i, d) real non-special rows
    # patch_special=True also edits BOS but still never a pad
    with capture([layer]) as sp:
        generate(model, tok, PROMPTS, max_new_tokens=2, batch_size=6, layer_module=layer, edits=[f] * 6,
                 patch_special=True)
    h2 = sp[0][0]
    assert torch.equal(h2[~real], h0[~real])
    assert torch.allclose(h2[real], h0[real] + 100.0, atol=1e-4)


def test_real_edit_changes_outputs(model, tok):
    base = generate(model, tok, PROMPTS, max_new_tokens=6)
    src = torch.randn(D, generator=torch.Generator().manual_seed(9)) * 10
    edited = generate(model, tok, PROMPTS, max_new_tokens=6, layer_module=LAYER,
                      edits=[SubspaceEdit(None, src, "full")] * len(PROMPTS))
    assert sum(a != b for a, b in zip(tokens(base), tokens(edited))) >= len(PROMPTS) // 2


def test_generated_positions_get_one_row(model, tok):
    shapes = []

    def f(h):
        shapes.append(tuple(h.shape))
        return h

    generate(model, tok, ["abc"], max_new_tokens=4, layer_module=LAYER, edits=[f], positions="all")
    assert shapes[0] == (3, D)
    assert all(s == (1, D) for s in shapes[1:]) and len(shapes) >= 2


def test_recorded_states_equal_teacher_forced_pass(model, tok):
    res = generate(model, tok, PROMPTS, max_new_tokens=7, batch_size=4, record_layers=[0, 2])
    for p, r in zip(PROMPTS, res):
        ids = tok([p])["input_ids"][0] + r["token_ids"]
        n_p, n = r["n_prompt_tokens"], r["n_new_tokens"]
        with torch.no_grad(), capture(model.model.layers, [0, 2]) as cap:
            model(input_ids=torch.tensor([ids]))
        for l in (0, 2):
            assert r["states"][l].shape == (n, D)
            ref = cap[l][0][0, n_p - 1:n_p - 1 + n].numpy()
            np.testing.assert_allclose(r["states"][l], ref, atol=1e-5)


def test_subspace_edit_formulas():
    V = basis(5, 4)
    P = V.T @ V
    g = torch.Generator().manual_seed(0)
    h, s = torch.randn(7, D, generator=g), torch.randn(7, D, generator=g)
    I = torch.eye(D)
    torch.testing.assert_close(SubspaceEdit(V, s, "span")(h), h @ (I - P) + s @ P, atol=1e-5, rtol=0)
    torch.testing.assert_close(SubspaceEdit(V, s, "complement")(h), h @ P + s @ (I - P), atol=1e-5, rtol=0)
    torch.testing.assert_close(SubspaceEdit(None, s, "full")(h), s)
    # a per-token source at a generated position contributes its mean
    torch.testing.assert_close(SubspaceEdit(None, s, "full")(h[:1]), s.mean(0, keepdim=True))


def test_bad_inputs(model, tok):
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, edits=[None] * 2, layer_module=LAYER)
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, edits=[lambda h: h] * len(PROMPTS))  # no layer
    with pytest.raises(ValueError):
        generate(model, tok, PROMPTS, positions="gen")
    with pytest.raises(ValueError):  # per-token source of the wrong length
        generate(model, tok, ["abc"], max_new_tokens=2, layer_module=LAYER,
                 edits=[SubspaceEdit(None, torch.zeros(5, D), "full")])
    with pytest.raises(ValueError):
        SubspaceEdit(None, torch.zeros(D), "span")
    assert generate(model, tok, []) == []


# ----------------------------------------------------------------------------- score
# Tolerance of the scorer against a plain unpadded forward: float32 over 3 layers with different
# padding (batched SDPA over masked keys), measured ~1e-6; stated bound 1e-4 on log-probabilities.
SCORE_ATOL = 1e-4


def plain_logprobs(model, tok, text, cont=()):
    """Unbatched, unpadded forward over prompt + cont: (len(cont) + 1, V) log-probs from the last
    prompt position on."""
    ids = tok([text])["input_ids"][0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + list(cont)])).logits[0].float()
    return torch.log_softmax(logits[len(ids) - 1:], dim=-1)


def test_score_matches_unbatched_plain_forward(model, tok):
    from zhunt.models.generation import score

    g = torch.Generator().manual_seed(0)
    conts = [[torch.randint(3, 64, (int(m),), generator=g).tolist() for m in ms]
             for ms in ([3, 1], [2], [4, 0, 2], [], [1, 5], [2, 2])]
    cands = [[5, 7], [9], [11, 12, 13], [4], [6, 6], [3]]
    groups = np.zeros((3, 64), dtype=bool)
    groups[0, 10:30] = True
    groups[1, ::3] = True  # groups[2] empty -> -inf
    for bs in (1, 4, 6):
        res = score(model, tok, PROMPTS, continuations=conts, candidates=cands, token_groups=groups,
                    batch_size=bs)
        assert res["lp_continuations"].shape == (6, 3) and res["lp_candidates"].shape == (6, 3)
        for i, p in enumerate(PROMPTS):
            lp = plain_logprobs(model, tok, p)[0]
            assert res["first_argmax"][i] == int(lp.argmax())
            np.testing.assert_allclose(res["lp_first"][i], float(lp.max()), atol=SCORE_ATOL)
            np.testing.assert_allclose(res["lp_candidates"][i, :len(cands[i])], lp[cands[i]].numpy(),
                                       atol=SCORE_ATOL)
            assert np.isnan(res["lp_candidates"][i, len(cands[i]):]).all()
            ref_g = [torch.logsumexp(lp[torch.from_numpy(m)], 0).item() for m in groups]
            np.testing.assert_allclose(res["lp_groups"][i], ref_g, atol=SCORE_ATOL)
            assert res["n_prompt_tokens"][i] == len(tok([p])["input_ids"][0])
            for j, c in enumerate(conts[i]):
                lpc = plain_logprobs(model, tok, p, c)
                ref = float(sum(lpc[t, c[t]] for t in range(len(c))))
                np.testing.assert_allclose(res["lp_continuations"][i, j], ref, atol=SCORE_ATOL)
            assert np.isnan(res["lp_continuations"][i, len(conts[i]):]).all()
    assert res["lp_groups"][:, 2].tolist() == [-np.inf] * 6


def test_score_with_prefixes_matches_plain_forward(model, tok):
    """A per-row prefix is teacher-forced after the prompt; everything is scored after it (empty = as before)."""
    from zhunt.models.generation import score

    g = torch.Generator().manual_seed(1)
    prefs = [torch.randint(3, 64, (int(m),), generator=g).tolist() for m in (2, 0, 1, 3, 0, 1)]
    conts = [[torch.randint(3, 64, (int(m),), generator=g).tolist() for m in ms]
             for ms in ([3, 1], [2], [4, 0], [], [1], [2, 2])]
    cands = [[5, 7], [9], [11, 12], [4], [6], [3]]
    groups = np.zeros((1, 64), dtype=bool)
    groups[0, 10:30] = True
    for bs in (1, 4):
        res = score(model, tok, PROMPTS, continuations=conts, candidates=cands, token_groups=groups,
                    batch_size=bs, prefixes=prefs)
        for i, p in enumerate(PROMPTS):
            lp = plain_logprobs(model, tok, p, prefs[i])[len(prefs[i])]  # the position after the prefix
            assert res["first_argmax"][i] == int(lp.argmax())
            np.testing.assert_allclose(res["lp_candidates"][i, :len(cands[i])], lp[cands[i]].numpy(),
                                       atol=SCORE_ATOL)
            np.testing.assert_allclose(res["lp_groups"][i, 0], torch.logsumexp(lp[10:30], 0).item(),
                                       atol=SCORE_ATOL)
            assert res["n_prompt_tokens"][i] == len(tok([p])["input_ids"][0])
            for j, c in enumerate(conts[i]):
                lpc = plain_logprobs(model, tok, p, prefs[i] + c)[len(prefs[i]):]
                np.testing.assert_allclose(res["lp_continuations"][i, j],
                                           float(sum(lpc[t, c[t]] for t in range(len(c)))), atol=SCORE_ATOL)
    empty = score(model, tok, PROMPTS, continuations=conts, candidates=cands, prefixes=[[]] * len(PROMPTS))
    plain = score(model, tok, PROMPTS, continuations=conts, candidates=cands)
    for key in ("first_argmax", "lp_candidates", "lp_continuations"):
        np.testing.assert_array_equal(empty[key], plain[key])
    with pytest.raises(ValueError):
        score(model, tok, PROMPTS, prefixes=[[1]])


@pytest.mark.parametrize("site", ["input", "output"])
def test_score_with_edits_and_prefix_equals_step_l_of_generate(model, tok, site):
    """Prefix = generate's own first L tokens: the scored position is generated step L, with the prompt edited
    and the prefix not (positions="prompt")."""
    from zhunt.models.generation import score

    g = torch.Generator().manual_seed(5)
    edits = [SubspaceEdit([basis(4, 1), None][i % 2], torch.randn(D, generator=g) * 3, ["span", "full"][i % 2])
             for i in range(len(PROMPTS))]
    edits[5] = None
    L = 3
    calls = []
    hd = model.lm_head.register_forward_hook(lambda m, a, o: calls.append(o.detach().clone()))
    try:
        gen = generate(model, tok, PROMPTS, max_new_tokens=L + 1, batch_size=len(PROMPTS), layer_module=LAYER,
                       edits=edits, site=site)
    finally:
        hd.remove()
    assert all(len(r["token_ids"]) == L + 1 for r in gen)  # eos is made unlikely
    ids = [tok([t])["input_ids"][0] for t in PROMPTS]
    order = sorted(range(len(PROMPTS)), key=lambda i: (-len(ids[i]), i))
    ref = torch.log_softmax(calls[L][:, -1].float(), dim=-1)  # step L of the single batch, sorted rows
    ref = ref[torch.tensor([order.index(i) for i in range(len(PROMPTS))])]
    cands = [[r["token_ids"][L], 7] for r in gen]
    res = score(model, tok, PROMPTS, candidates=cands, prefixes=[r["token_ids"][:L] for r in gen], batch_size=4,
                layer_module=LAYER, edits=edits, site=site)
    assert res["first_argmax"].tolist() == [r["token_ids"][L] for r in gen]
    np.testing.assert_allclose(res["lp_candidates"], np.stack([ref[i, c].numpy() for i, c in enumerate(cands)]),
                               atol=SCORE_ATOL)


def first_step_logits(model, tok, texts, **kw):
    """generate's step-0 logits (the lm_head call of the prefill), in input order, and its tokens."""
    calls = []
    hd = model.lm_head.register_forward_hook(lambda m, a, o: calls.append(o.detach().clone()))
    try:
        res = generate(model, tok, texts, max_new_tokens=2, **kw)
    finally:
        hd.remove()
    # one prefill call per batch: rows are length-sorted within the batch
    bs = kw.get("batch_size", 16)
    ids = [tok([t])["input_ids"][0] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-len(ids[i]), i))
    prefills = calls[::2]  # max_new_tokens=2: prefill, one decode step per batch
    out = [None] * len(texts)
    for b, s0 in enumerate(range(0, len(texts), bs)):
        for r, i in enumerate(order[s0:s0 + bs]):
            out[i] = prefills[b][r, -1].float()
    return torch.stack(out), res


@pytest.mark.parametrize("site", ["input", "output"])
def test_score_with_edits_equals_first_step_of_generate(model, tok, site):
    from zhunt.models.generation import score

    g = torch.Generator().manual_seed(4)
    edits = []
    for i, p in enumerate(PROMPTS):
        src = torch.randn(len(p), D, generator=g) * 3 if i % 2 else torch.randn(D, generator=g) * 3
        edits.append(SubspaceEdit([basis(4, 1), basis(6, 2), None][i % 3], src, ["span", "complement", "full"][i % 3]))
    edits[4] = lambda h: h * 0.5  # a plain callable rides along
    edits[5] = None
    ref_logits, gen = first_step_logits(model, tok, PROMPTS, batch_size=4, layer_module=LAYER, edits=edits,
                                        site=site)
    ref_lp = torch.log_softmax(ref_logits, dim=-1)
    cands = [[r["token_ids"][0], 7] for r in gen]
    for conts in (None, [[r["token_ids"]] for r in gen]):  # with continuations rows are replicated
        res = score(model, tok, PROMPTS, candidates=cands, continuations=conts, batch_size=4,
                    layer_module=LAYER, edits=edits, site=site)
        assert res["first_argmax"].tolist() == [r["token_ids"][0] for r in gen]
        np.testing.assert_allclose(res["lp_candidates"],
                                   np.stack([ref_lp[i, c].numpy() for i, c in enumerate(cands)]), atol=SCORE_ATOL)
    # the edits do something, and the two sites differ
    plain = score(model, tok, PROMPTS, candidates=cands)
    assert not np.allclose(plain["lp_candidates"][:5], res["lp_candidates"][:5], atol=1e-3)
    np.testing.assert_allclose(plain["lp_candidates"][5], res["lp_candidates"][5], atol=SCORE_ATOL)


def test_score_bad_inputs(model, tok):
    from zhunt.models.generation import score

    with pytest.raises(ValueError):
        score(model, tok, PROMPTS, candidates=[[1]])
    with pytest.raises(ValueError):
        score(model, tok, PROMPTS, token_groups=np.zeros((2, 65), dtype=bool))
    with pytest.raises(ValueError):
        score(model, tok, PROMPTS, edits=[lambda h: h] * len(PROMPTS))
    with pytest.raises(ValueError):
        score(model, tok, PROMPTS, site="middle")
    assert score(model, tok, [])["first_argmax"].shape == (0,)


def test_score_full_interchange_at_input_reproduces_donor(model, tok):
    """Through the batched API: every non-special position of the input of layers[l] from the donor
    (same token length as the base) gives the donor's own next-token distribution, at every layer."""
    from zhunt.models.generation import score
    from zhunt.models.hooks import capture_hidden_states

    pairs = [("abc def", "xyz 123"), ("hi", "yo"), ("q: 7 times 8?", "q: 9 minus 2?")]
    base, donor = [b for b, _ in pairs], [d for _, d in pairs]
    V = list(range(64))
    ref = score(model, tok, donor, candidates=[V] * 3)["lp_candidates"]
    for l in range(3):
        src = []
        for t in donor:
            with torch.no_grad(), capture_hidden_states(model.model.layers) as hc:
                model(**tok([t], return_tensors="pt"))
            src.append(hc.hidden[l][0][0, 1:])  # BOS (special) is not patched
        got = score(model, tok, base, candidates=[V] * 3, layer_module=l, site="input", batch_size=3,
                    edits=[SubspaceEdit(None, s, "full") for s in src])
        np.testing.assert_allclose(got["lp_candidates"], ref, atol=SCORE_ATOL)


@pytest.mark.parametrize("site", ["input", "output"])
def test_prefix_states_equal_a_plain_forward(model, tok, site):
    """``prefix_states``: the stream at the site at the prefix positions, batched and left-padded, equals an
    unpadded forward's hidden states there (independent capture: ``capture_hidden_states``)."""
    from zhunt.models.generation import score
    from zhunt.models.hooks import capture_hidden_states

    prefs = [[5, 6], [], [7], [8, 9, 10], [11], [12, 13]]
    got = score(model, tok, PROMPTS, prefixes=prefs, layer_module=LAYER, site=site, prefix_states=True,
                batch_size=4)["prefix_states"]
    j = LAYER if site == "input" else LAYER + 1
    for text, a, st in zip(PROMPTS, prefs, got):
        ids = tok([text])["input_ids"][0] + a
        with torch.no_grad(), capture_hidden_states(model.model.layers) as hc:
            model(input_ids=torch.tensor([ids]))
        want = hc.hidden[j][0][0, len(ids) - len(a):].numpy()
        assert st.shape == (len(a), D)
        np.testing.assert_allclose(st, want, atol=1e-5)


def test_patch_prefix_full_interchange_reproduces_the_donor_after_a_common_prefix(model, tok):
    """With the prefix patched too, a full interchange of prompt + prefix from a donor of the same token length
    gives the donor's own distribution after the prefix at every layer; without it, it does not."""
    from zhunt.models.generation import score
    from zhunt.models.hooks import capture_hidden_states

    base, donor, a = ["abc def", "q: 7 times 8?"], ["xyz 123", "q: 9 minus 2?"], [[20, 21], [22]]
    V = list(range(64))
    ref = score(model, tok, donor, candidates=[V] * 2, prefixes=a)["lp_candidates"]
    for l in range(3):
        st = score(model, tok, donor, prefixes=a, layer_module=l, site="input", prefix_states=True)["prefix_states"]
        src = []
        for t, p in zip(donor, st):
            with torch.no_grad(), capture_hidden_states(model.model.layers) as hc:
                model(**tok([t], return_tensors="pt"))
            src.append(torch.cat([hc.hidden[l][0][0, 1:], torch.from_numpy(p)]))  # BOS not patched
        edits = [SubspaceEdit(None, s, "full") for s in src]
        got = score(model, tok, base, candidates=[V] * 2, prefixes=a, layer_module=l, site="input", edits=edits,
                    patch_prefix=True)
        np.testing.assert_allclose(got["lp_candidates"], ref, atol=SCORE_ATOL)
        if l > 0:  # the unpatched prefix still reads the base prompt below the site
            off = score(model, tok, base, candidates=[V] * 2, prefixes=a, layer_module=l, site="input",
                        edits=[e.head(e.source.shape[0] - len(p)) for e, p in zip(edits, a)])
            assert not np.allclose(off["lp_candidates"], ref, atol=1e-3)


def test_subspace_edit_head():
    V, S = basis(), torch.randn(5, D)
    e = SubspaceEdit(V, S, "span")
    h = e.head(3)
    assert h.source.shape == (3, D) and torch.equal(h.source, S[:3]) and h.basis is e.basis and h.mode == "span"
    b = SubspaceEdit(V, S[0], "span")
    assert b.head(2) is b  # a broadcast source covers any number of positions
    with pytest.raises(ValueError):
        e.head(6)


def edited_logprobs(model, tok, text, prefix, cont, edit, site, patch_prefix):
    """One unbatched, unpadded, uncached forward over prompt + prefix + cont with ``edit`` applied by hand at
    ``site`` of layer LAYER to the prompt's non-special positions (and the prefix's with ``patch_prefix``):
    (len(cont) + 1, V) log-probs from the scored position on (the continuation is never edited)."""
    from zhunt.models.hooks import patch

    ids = tok([text])["input_ids"][0]
    special = set(tok.all_special_ids)
    mask = [t not in special for t in ids] + [patch_prefix and t not in special for t in prefix] + [False] * len(cont)
    pos = torch.tensor([i for i, m in enumerate(mask) if m])

    def fn(h, ctx):
        new = h.clone()
        if edit is not None:
            new[0, pos] = edit(h[0, pos])
        return new

    with torch.no_grad(), patch(model.model.layers[LAYER], fn, prompt_mask=torch.tensor([mask]), site=site):
        logits = model(input_ids=torch.tensor([ids + prefix + cont])).logits[0].float()
    return torch.log_softmax(logits[len(ids) + len(prefix) - 1:], dim=-1)


@pytest.mark.parametrize("site", ["input", "output"])
@pytest.mark.parametrize("patch_prefix", [False, True])
def test_score_continuations_under_edits_equal_one_uncached_forward(model, tok, site, patch_prefix):
    """The prefill-once scorer (edited prefill with the KV cache, then the continuations on copies of the
    cache) equals one plain edited forward per (prompt, continuation) for every quantity, with ragged
    prefixes, continuations of 0, 1 and more tokens, left padding and every batch size."""
    from zhunt.models.generation import score

    g = torch.Generator().manual_seed(7)
    prefs = [torch.randint(4, 64, (int(m),), generator=g).tolist() for m in (2, 0, 1, 3, 0, 1)]
    conts = [[torch.randint(4, 64, (int(m),), generator=g).tolist() for m in ms]
             for ms in ([3, 1], [2], [4, 0, 2], [], [1, 5], [2, 2])]
    cands = [[5, 7], [9], [11, 12], [4], [6], [3]]
    groups = np.zeros((2, 64), dtype=bool)
    groups[0, 10:30] = True
    groups[1, ::3] = True
    edits = []
    for i, p in enumerate(PROMPTS):  # BOS is special: len(p) patchable prompt positions
        m = len(p) + (len(prefs[i]) if patch_prefix else 0)
        src = torch.randn(m, D, generator=g) * 3 if i % 2 else torch.randn(D, generator=g) * 3
        edits.append(SubspaceEdit([basis(4, 1), basis(6, 2), None][i % 3], src, ["span", "complement", "full"][i % 3]))
    edits[5] = None
    for bs in (1, 4, 6):
        res = score(model, tok, PROMPTS, continuations=conts, candidates=cands, token_groups=groups, prefixes=prefs,
                    layer_module=LAYER, site=site, edits=edits, patch_prefix=patch_prefix, prefix_states=True,
                    batch_size=bs)
        for i, p in enumerate(PROMPTS):
            lp = edited_logprobs(model, tok, p, prefs[i], [], edits[i], site, patch_prefix)[0]
            assert res["first_argmax"][i] == int(lp.argmax())
            np.testing.assert_allclose(res["lp_candidates"][i, :len(cands[i])], lp[cands[i]].numpy(), atol=SCORE_ATOL)
            np.testing.assert_allclose(res["lp_groups"][i], [torch.logsumexp(lp[torch.from_numpy(m)], 0).item()
                                                             for m in groups], atol=SCORE_ATOL)
            assert res["prefix_states"][i].shape == (len(prefs[i]), D)
            for j, c in enumerate(conts[i]):
                lpc = edited_logprobs(model, tok, p, prefs[i], c, edits[i], site, patch_prefix)
                np.testing.assert_allclose(res["lp_continuations"][i, j],
                                           float(sum(lpc[t, c[t]] for t in range(len(c)))), atol=SCORE_ATOL)
            assert np.isnan(res["lp_continuations"][i, len(conts[i]):]).all()
