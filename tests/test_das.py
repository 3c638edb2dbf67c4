"""Tests for zhunt.experiments.das: distributed alignment search on a planted model, k = d, determinism, and the
positive control on the trained organism (slow)."""

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zhunt.experiments.das import DASFit, fit_das
from zhunt.models.generation import SubspaceEdit, score
from zhunt.models.hooks import capture_hidden_states
from zhunt.subspace import grassmann_similarity, random_subspace

transformers = pytest.importorskip("transformers")

D, K, LAYER = 32, 3, 1
LETTERS = "abcdefghijklmnopqrstuvwx"  # 24 = 8 U-codes x 3 U-perp values, independent of each other
N_PAIRS = 128
#: DAS must recover the planted subspace at least this well (Grassmann similarity, 1 = identical).
MIN_GRASSMANN = 0.9


@pytest.fixture(scope="module")
def planted(tok):
    """A 2-layer Qwen2 whose next-token logits depend on the input of layers[1] only through span(U).

    Site states are the embeddings (every layer's attention and MLP write zero); token c = (i, j) has
    embedding ``codes[i] @ U + B[j] @ W`` with U (3, d), W = U-perp, ``codes`` the 8 sign patterns
    of {-1, 1}^3; the final norm is the identity and the lm_head reads U only: the logit of token
    ``LETTERS[3 i]`` is ``3 codes[i] . (U h_last)``, so the argmax names the sign pattern of the last
    position's U-coordinates (every direction of U matters) and the U-perp content (independent of
    the U content over the letters) is never read.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    U, W = Q[:, :K].T.contiguous(), Q[:, K:].T.contiguous()
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=K)))
    B = torch.randn(3, D - K, generator=g)
    with torch.no_grad():
        E = m.model.embed_tokens.weight
        for c_i, c in enumerate(LETTERS):
            i, j = divmod(c_i, 3)
            E[tok.convert_tokens_to_ids(c)] = codes[i] @ U + B[j] @ W
        for lay in m.model.layers:
            lay.self_attn.o_proj.weight.zero_()
            lay.mlp.down_proj.weight.zero_()
        m.model.norm = torch.nn.Identity()
        m.lm_head.weight.zero_()
        for i in range(len(codes)):
            m.lm_head.weight[tok.convert_tokens_to_ids(LETTERS[3 * i])] = 3.0 * codes[i] @ U
    rng = np.random.default_rng(0)
    base = ["".join(rng.choice(list(LETTERS), 6)) for _ in range(N_PAIRS)]
    donor = ["".join(rng.choice(list(LETTERS), 6)) for _ in range(N_PAIRS)]
    with torch.no_grad(), capture_hidden_states(m.model.layers) as hc:
        for t in donor:
            m(**tok([t], return_tensors="pt"))
    sources = [hc.hidden[LAYER][i][0, 1:].clone() for i in range(N_PAIRS)]  # index LAYER, BOS dropped
    y = score(m, tok, donor)["first_argmax"]
    y_base = score(m, tok, base)["first_argmax"]
    return {"model": m, "U": U, "base": base, "sources": sources, "y": y, "y_base": y_base}


def iia(model, tok, texts, sources, y, y_base, V):
    """Interchange-intervention accuracy along V at the input of LAYER, over pairs whose targets differ."""
    edits = [SubspaceEdit(V, s, "span") for s in sources] if V is not None else \
        [SubspaceEdit(None, s, "full") for s in sources]
    r = score(model, tok, texts, layer_module=LAYER, site="input", edits=edits)
    differ = y != y_base
    return float((r["first_argmax"][differ] == y[differ]).mean()), int(differ.sum())


def test_das_recovers_planted_subspace(planted, tok):
    m, U = planted["model"], planted["U"]
    tr, te = slice(0, N_PAIRS // 2), slice(N_PAIRS // 2, None)
    fit = fit_das(m, tok, planted["base"][tr], planted["sources"][tr], planted["y"][tr], layer=LAYER,
                  site="input", k=K, steps=150, lr=0.05, batch_size=16, random_state=0)
    assert isinstance(fit, DASFit) and fit.basis.shape == (K, D) and fit.basis.dtype == np.float32
    np.testing.assert_allclose(fit.basis @ fit.basis.T, np.eye(K), atol=1e-5)
    assert fit.losses.shape == (150,) and fit.losses[-10:].mean() < 0.1 * fit.losses[:10].mean()
    sim = grassmann_similarity(fit.basis, U.numpy())
    assert sim >= MIN_GRASSMANN, sim
    args = (m, tok, planted["base"][te], planted["sources"][te], planted["y"][te], planted["y_base"][te])
    truth, n = iia(*args, U)
    learned, _ = iia(*args, torch.from_numpy(fit.basis))
    haar, _ = iia(*args, torch.from_numpy(random_subspace(K, D, random_state=3).astype(np.float32)))
    print(f"planted DAS: Grassmann {sim:.4f}, held-out IIA {learned:.3f} (U {truth:.3f}, Haar {haar:.3f}, n {n}), "
          f"{fit.seconds:.1f}s")
    assert n >= 40
    assert truth == 1.0  # the planted subspace carries the whole effect
    assert learned >= 0.9  # held out
    assert haar < 0.5  # a random 3-dim subspace of 32 does not
    # the learned basis scores through the ordinary edits
    assert all(isinstance(e, SubspaceEdit) and e.mode == "span" for e in fit.edits(planted["sources"][:3]))


def test_das_full_rank_equals_full_interchange(planted, tok):
    """k = d: V^T V = I whatever V, so the DAS interchange is the full interchange."""
    m = planted["model"]
    texts, sources = planted["base"][:12], planted["sources"][:12]
    fit = fit_das(m, tok, texts, sources, planted["y"][:12], layer=LAYER, site="input", k=D, steps=3,
                  lr=0.05, batch_size=4)
    cands = [[int(a), int(b)] for a, b in zip(planted["y"][:12], planted["y_base"][:12])]
    a = score(m, tok, texts, candidates=cands, layer_module=LAYER, site="input", edits=fit.edits(sources))
    b = score(m, tok, texts, candidates=cands, layer_module=LAYER, site="input",
              edits=[SubspaceEdit(None, s, "full") for s in sources])
    assert a["first_argmax"].tolist() == b["first_argmax"].tolist()
    np.testing.assert_allclose(a["lp_candidates"], b["lp_candidates"], atol=1e-4)


def test_das_loss_with_prefixes_equals_score(tok):
    """With per-row prefixes (teacher-forced; unpatched, or patched with ``patch_prefix``) the first-step loss is
    -mean log p(y | x, prefix) of :func:`zhunt.models.generation.score` under the same span interchange (a random
    2-layer model, attention on)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(3)
    m = Qwen2ForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(2)
    texts = ["abc", "de fgh", "ijkl", "m", "nop qr", "stu"]
    prefs = [torch.randint(3, len(tok), (int(L),), generator=g).tolist() for L in (2, 0, 1, 3, 1, 0)]
    sources = [torch.randn(D, generator=g) * 3 for _ in texts]
    y = torch.randint(3, len(tok), (len(texts),), generator=g).tolist()
    V0 = random_subspace(K, D, random_state=4).astype(np.float32)
    for pr in (prefs, None):
        fit = fit_das(m, tok, texts, sources, y, layer=LAYER, site="input", k=K, steps=1, lr=1e-12,
                      batch_size=len(texts), init=V0, prefixes=pr)
        ref = score(m, tok, texts, candidates=[[t] for t in y], layer_module=LAYER, site="input", prefixes=pr,
                    edits=[SubspaceEdit(torch.from_numpy(V0), s, "span") for s in sources])
        np.testing.assert_allclose(fit.losses[0], -ref["lp_candidates"][:, 0].mean(), atol=1e-4)
    # patched prefix: per-token sources with one row per prompt token (BOS dropped) and per prefix token
    n_tok = [len(tok([t])["input_ids"][0]) - 1 for t in texts]
    rows = [torch.randn(n + len(a), D, generator=g) * 3 for n, a in zip(n_tok, prefs)]
    fit = fit_das(m, tok, texts, rows, y, layer=LAYER, site="input", k=K, steps=1, lr=1e-12, batch_size=len(texts),
                  init=V0, prefixes=prefs, patch_prefix=True)
    edits = [SubspaceEdit(torch.from_numpy(V0), s, "span") for s in rows]
    ref = score(m, tok, texts, candidates=[[t] for t in y], layer_module=LAYER, site="input", prefixes=prefs,
                edits=edits, patch_prefix=True)
    np.testing.assert_allclose(fit.losses[0], -ref["lp_candidates"][:, 0].mean(), atol=1e-4)
    unpatched = score(m, tok, texts, candidates=[[t] for t in y], layer_module=LAYER, site="input", prefixes=prefs,
                      edits=[e.head(n) for e, n in zip(edits, n_tok)])
    assert abs(fit.losses[0] + unpatched["lp_candidates"][:, 0].mean()) > 1e-3  # the prefix rows matter
    with pytest.raises(ValueError, match="prefixes"):
        fit_das(m, tok, texts, sources, y, layer=LAYER, site="input", k=K, steps=1, prefixes=prefs[:2])


def test_das_deterministic_and_init(planted, tok):
    m = planted["model"]
    kw = dict(layer=LAYER, site="input", k=K, steps=8, lr=0.05, batch_size=8)
    args = (m, tok, planted["base"][:32], planted["sources"][:32], planted["y"][:32])
    a, b = fit_das(*args, random_state=7, **kw), fit_das(*args, random_state=7, **kw)
    np.testing.assert_array_equal(a.basis, b.basis)
    np.testing.assert_array_equal(a.losses, b.losses)
    c = fit_das(*args, random_state=8, **kw)
    assert not np.allclose(a.basis, c.basis)
    # an initial basis is the starting point: with a vanishing learning rate it stays put
    U = planted["U"].numpy()
    d = fit_das(*args, init=U, **{**kw, "lr": 1e-12, "steps": 2})
    np.testing.assert_allclose(d.basis, U, atol=1e-5)
    with pytest.raises(ValueError, match="orthonormal"):
        fit_das(*args, init=2 * U, **kw)
    with pytest.raises(ValueError, match="shape"):
        fit_das(*args, init=U[:2], **kw)
    with pytest.raises(ValueError, match="k must"):
        fit_das(*args, **{**kw, "k": D + 1})
    with pytest.raises(ValueError):
        fit_das(m, tok, planted["base"][:3], planted["sources"][:2], planted["y"][:3], **kw)
    with pytest.raises(ValueError):
        fit_das(*args, **{**kw, "site": "middle"})
    # the model is left as it was: weights frozen during the fit, flags restored after
    assert all(p.requires_grad for p in m.parameters())
    assert all(p.grad is None for p in m.parameters())


# ----------------------------------------------------------------------------- positive control
ORGANISM = Path(__file__).resolve().parents[1] / "resources" / "models" / "organism"
#: Held-out IIA the positive control must reach (issue 12: DAS at the primary layer and k, same-language
#: template-aligned interchange on the organism).
MIN_HELDOUT_IIA = 0.8
#: Fit settings of the positive control (Adam steps, learning rate, minibatch).
CONTROL_STEPS, CONTROL_LR, CONTROL_BATCH = 400, 0.02, 32


def organism_aligned_pairs(tok, n_problems=600, seed=0):
    """English prompts of held-out organism problems, each paired with a donor of the same operation
    and token length (so every prompt position aligns); split by problem into train / test halves.

    Returns ``{"train": (base_texts, donor_texts), "test": (...)}``.
    """
    from zhunt.models.organism import format_prompt, make_problems

    problems = make_problems(n_problems, seed, split="heldout")
    texts = [format_prompt(p["en"], "en") for p in problems]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    rng = np.random.default_rng(seed)
    out = {}
    half = len(problems) // 2
    for split, idx in (("train", range(half)), ("test", range(half, len(problems)))):
        groups = {}
        for i in idx:
            groups.setdefault((problems[i]["op"], lengths[i]), []).append(i)
        base, donor = [], []
        for members in groups.values():
            if len(members) < 2:
                continue
            shift = rng.permutation(len(members))
            for a, b in zip(shift, np.roll(shift, 1)):  # a derangement: nobody is their own donor
                base.append(texts[members[a]])
                donor.append(texts[members[b]])
        out[split] = (base, donor)
    return out


def site_sources(model, tok, texts, j, tmp_path):
    """Per prompt, the (T_i, d) hidden states at store index j of its non-special tokens."""
    import pandas as pd

    from zhunt.data.extraction import extract_to_store
    from zhunt.models import get_adapter
    from zhunt.data.store import ActivationStore

    uniq = sorted(set(texts))
    df = pd.DataFrame({"id": [f"p{i}" for i in range(len(uniq))], "lang": "en", "text": uniq})
    path = tmp_path / "donors.h5"
    extract_to_store(model, tok, get_adapter(model).layers, df, path, batch_size=64)
    rows = {}
    with ActivationStore(path) as st:
        for pid, t in zip(df["id"], uniq):
            rows[t] = torch.from_numpy(st.tokens(pid, "en", j)[~st.token_mask(pid, "en")])
    return [rows[t] for t in texts]


@pytest.mark.slow
def test_das_positive_control_on_organism(tmp_path):
    """English base <- English donor of the same operation and token length, every prompt position
    from the donor, input of layer 3, k = 16: DAS held-out IIA >= 0.8 (and the full interchange 1)."""
    if not (ORGANISM / "config.json").is_file():
        pytest.skip(f"no trained organism at {ORGANISM} (build it with snakemake resources/models/organism)")
    from zhunt.models import load_model
    from zhunt.models.site import hidden_index

    layer, k, site = 3, 16, "input"
    model, tok = load_model(ORGANISM, device="cpu")
    pairs = organism_aligned_pairs(tok)
    res = {}
    data = {}
    for split, (base, donor) in pairs.items():
        src = site_sources(model, tok, donor, hidden_index(layer, site), tmp_path)
        y = score(model, tok, donor, batch_size=64)["first_argmax"]
        y_base = score(model, tok, base, batch_size=64)["first_argmax"]
        data[split] = (base, src, y, y_base)
    t0 = time.perf_counter()
    base, src, y, _ = data["train"]
    fit = fit_das(model, tok, base, src, y, layer=layer, site=site, k=k, steps=CONTROL_STEPS, lr=CONTROL_LR,
                  batch_size=CONTROL_BATCH, random_state=0)
    res["seconds"] = time.perf_counter() - t0
    for split, (base, src, y, y_base) in data.items():
        differ = y != y_base
        for name, edits in (("das", fit.edits(src)), ("full", [SubspaceEdit(None, s, "full") for s in src])):
            got = score(model, tok, base, layer_module=layer, site=site, edits=edits, batch_size=64)["first_argmax"]
            res[f"{name}_{split}_iia"] = float((got[differ] == y[differ]).mean())
        res[f"n_{split}"] = int(differ.sum())
    res["loss_first10"], res["loss_last10"] = float(fit.losses[:10].mean()), float(fit.losses[-10:].mean())
    print("DAS positive control:", res)
    assert res["n_test"] >= 50
    assert res["full_test_iia"] == 1.0  # the exact interchange
    assert res["das_test_iia"] >= MIN_HELDOUT_IIA, res
