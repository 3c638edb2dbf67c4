"""A store that scales: layer subsets (extraction.layers), shards + gather, OOM backoff."""

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from zhunt.errors import ZhuntError
from zhunt.data.extraction import batch_plan, extract_to_store, shard_batches
from zhunt.models.site import store_hidden_indices, study_layers
from zhunt.data.store import ActivationStore, gather_shards, hidden_name

transformers = pytest.importorskip("transformers")

L, D = 4, 32


@pytest.fixture(scope="module")
def model(make_qwen2):
    return make_qwen2(L, D, 64)


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghij 0123456789?")
    rows = []
    for i in range(11):
        for lang in ("en", "zh"):
            n = int(rng.integers(3, 25))
            rows.append({"id": f"p{i}", "lang": lang, "text": "".join(rng.choice(alphabet, n)),
                         "answer": str(i), "category": "c"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def full(model, tok, prompts, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "full.h5"
    extract_to_store(model, tok, model.model.layers, prompts, path, batch_size=3)
    return path


def _same_store(a, b, indices):
    pd.testing.assert_frame_equal(a.prompts, b.prompts)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    np.testing.assert_array_equal(a.special, b.special)
    for j in indices:
        np.testing.assert_array_equal(a.hidden(j), b.hidden(j))  # bit for bit


# ------------------------------------------------------------------ batches and shards
def test_batches_are_length_sorted(tok, prompts):
    lengths = np.array([len(s) for s in tok(list(prompts["text"]))["input_ids"]])
    plan = batch_plan(lengths, 3)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(len(prompts)))
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first
    assert [len(b) for b in plan] == [3] * 7 + [1]
    assert shard_batches(8, 1, 3) == [1, 4, 7]


@pytest.mark.parametrize("n_shards", [2, 3])
def test_sharded_reads_equal_unsharded_bit_for_bit(model, tok, prompts, full, tmp_path, n_shards):
    paths = [tmp_path / f"s.shard{i}of{n_shards}.h5" for i in range(n_shards)]
    for i, p in enumerate(paths):
        extract_to_store(model, tok, model.model.layers, prompts, p, batch_size=3, shard=(i, n_shards))
    out = tmp_path / "s.h5"
    info = gather_shards(paths[::-1], out)  # any order
    assert info["n_shards"] == n_shards and info["n_prompts"] == len(prompts)
    with h5py.File(out) as f:
        assert f[hidden_name(2)].is_virtual
    with ActivationStore(full) as a, ActivationStore(out) as b:
        _same_store(a, b, range(L + 1))
        for j in (0, 3):
            np.testing.assert_array_equal(a.pooled(j, "zh"), b.pooled(j, "zh"))
            np.testing.assert_array_equal(a.tokens("p4", "en", j), b.tokens("p4", "en", j))
    # the gathered store needs its shards: a missing one is an error, never silent fill values
    paths[1].unlink()
    with pytest.raises(ZhuntError, match=r"shard file .*shard1of.* is missing; delete s.h5 and re-run"):
        ActivationStore(out)


def test_gather_stage_joins_the_rule_inputs(model, tok, prompts, full, tmp_path):
    from zhunt.stages.data import run_gather_activations

    paths = [tmp_path / f"s.shard{i}of2.h5" for i in range(2)]
    for i, p in enumerate(paths):
        extract_to_store(model, tok, model.model.layers, prompts, p, batch_size=3, shard=(i, 2))
    out = tmp_path / "s.h5"
    run_gather_activations({"shards": [str(p) for p in paths]}, {}, {"store": str(out)})
    with ActivationStore(full) as a, ActivationStore(out) as b:
        _same_store(a, b, range(L + 1))
        assert b.attrs["n_prompts"] == len(prompts)


def test_gather_refuses_incomplete_or_foreign_shards(model, tok, prompts, tmp_path):
    paths = [tmp_path / f"s.shard{i}of2.h5" for i in range(2)]
    for i, p in enumerate(paths):
        extract_to_store(model, tok, model.model.layers, prompts, p, batch_size=3, shard=(i, 2))
    with pytest.raises(ZhuntError, match="written as one of 2 shards, but 1 were given"):
        gather_shards(paths[:1], tmp_path / "s.h5")
    with pytest.raises(ZhuntError, match="shard 0 given twice"):
        gather_shards([paths[0], paths[0]], tmp_path / "s.h5")
    other = tmp_path / "o.shard1of2.h5"
    extract_to_store(model, tok, model.model.layers, prompts.iloc[:-2], other, batch_size=3, shard=(1, 2))
    with pytest.raises(ZhuntError, match="differs from"):
        gather_shards([paths[0], other], tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(ZhuntError, match="extraction.shards: .*shard 8 has no batch .*at most 8 shards"):
        extract_to_store(model, tok, model.model.layers, prompts, tmp_path / "x.h5", batch_size=3, shard=(8, 9))


# ------------------------------------------------------------------ layer subsets
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_layer_subset_store(model, tok, prompts, tmp_path, dtype):
    ref = tmp_path / "all.h5"
    sub = tmp_path / "sub.h5"
    extract_to_store(model, tok, model.model.layers, prompts, ref, batch_size=3, dtype=dtype)
    extract_to_store(model, tok, model.model.layers, prompts, sub, batch_size=3, dtype=dtype,
                     hidden_indices=[0, 2])
    with ActivationStore(ref) as a, ActivationStore(sub) as b:
        assert b.stored_indices == [0, 2] and a.stored_indices == list(range(L + 1))
        _same_store(a, b, [0, 2])
        # pooled vectors of every index (what Exp. B and the seed-003 tests read) are exact
        for j in range(L + 1):
            for pooling in ("mean", "last"):
                np.testing.assert_array_equal(a.pooled(j, "en", pooling), b.pooled(j, "en", pooling))
        np.testing.assert_array_equal(a.pooled_update(3), b.pooled_update(3))
        # the digit-confound control's numeral-free mean too (the numeral ids the writer stored)
        from zhunt.data.numerals import numeral_token_ids

        num = numeral_token_ids(tok, a.token_ids)
        assert len(num) and np.isin(a.token_ids, num).any()
        for j in range(L + 1):
            np.testing.assert_array_equal(a.pooled(j, "en", exclude_ids=num), b.pooled(j, "en", exclude_ids=num))
        for read in (lambda: b.hidden(3), lambda: b.tokens("p0", "en", 4), lambda: b.updates(1),
                     lambda: b.pooled(3, exclude_special=False), lambda: b.pooled(3, exclude_ids=num[:-1]),
                     lambda: b.pooled(3, "en", "last", exclude_ids=num)):
            with pytest.raises(ZhuntError, match=r"^extraction\.layers: .*not at \d; add \d to extraction\.layers"):
                read()
    assert sub.stat().st_size < ref.stat().st_size


def test_sharded_layer_subset(model, tok, prompts, tmp_path):
    ref = tmp_path / "all.h5"
    extract_to_store(model, tok, model.model.layers, prompts, ref, batch_size=4, hidden_indices=[0, 3])
    paths = [tmp_path / f"s.shard{i}of2.h5" for i in range(2)]
    for i, p in enumerate(paths):
        extract_to_store(model, tok, model.model.layers, prompts, p, batch_size=4, shard=(i, 2),
                         hidden_indices=[0, 3])
    gather_shards(paths, tmp_path / "s.h5")
    with ActivationStore(ref) as a, ActivationStore(tmp_path / "s.h5") as b:
        _same_store(a, b, [0, 3])
        from zhunt.data.numerals import numeral_token_ids

        num = numeral_token_ids(tok, a.token_ids)
        for j in range(L + 1):
            np.testing.assert_array_equal(a.pooled(j), b.pooled(j))
            np.testing.assert_array_equal(a.pooled(j, exclude_ids=num), b.pooled(j, exclude_ids=num))


def test_study_hidden_indices():
    study = {"primary_layer": 32, "secondary_layer": 33, "phase2_layers": [32, 33],
             "ard": {"layers": [10, 15, 20, 25, 28, 30, 32, 33, 34, 35]}}
    got = store_hidden_indices("study", study_layers(study), 36)
    assert got == [0, 10, 11, 15, 16, 20, 21, 25, 26, 28, 29, 30, 31, 32, 33, 34, 35, 36]
    assert store_hidden_indices("all", [], 36) is None
    assert store_hidden_indices([5, 3], [], 36) == [0, 3, 5]
    with pytest.raises(ZhuntError, match=r"^extraction\.layers: hidden index 37 outside 0\.\.36"):
        store_hidden_indices([37], [], 36)
    with pytest.raises(ZhuntError, match=r"^extraction\.layers: .*auto"):
        store_hidden_indices("study", study_layers({**study, "primary_layer": "auto"}), 36)


# ------------------------------------------------------------------ OOM backoff
class _OOMOnBig:
    """Wrap a forward: raise a CUDA-style OOM whenever the batch has more than `limit` rows."""

    def __init__(self, fn, limit, exc):
        self.fn, self.limit, self.exc, self.sizes = fn, limit, exc, []

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.sizes.append(int(ids.shape[0]))
        if ids.shape[0] > self.limit:
            raise self.exc
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("exc", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                 RuntimeError("CUDA error: out of memory")])
def test_extraction_oom_backoff(model, tok, prompts, full, tmp_path, monkeypatch, caplog, exc):
    fake = _OOMOnBig(model.forward, 1, exc)
    monkeypatch.setattr(model, "forward", fake)
    out = tmp_path / "oom.h5"
    with caplog.at_level("WARNING", logger="zhunt.models.batching"):
        extract_to_store(model, tok, model.model.layers, prompts, out, batch_size=3)
    assert fake.sizes[:4] == [3, 2, 1, 1]  # 3 -> 2 + 1 -> (1 + 1) + 1
    assert "out of memory on a batch of 3 prompts; retrying it as 2 + 1" in caplog.text
    with ActivationStore(full) as a, ActivationStore(out) as b:
        pd.testing.assert_frame_equal(a.prompts, b.prompts)
        for j in range(L + 1):
            np.testing.assert_allclose(a.hidden(j), b.hidden(j), atol=1e-5, rtol=0)


def test_extraction_oom_at_batch_one_and_other_errors_reraise(model, tok, prompts, tmp_path, monkeypatch):
    monkeypatch.setattr(model, "forward", _OOMOnBig(model.forward, 0, torch.cuda.OutOfMemoryError("oom")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        extract_to_store(model, tok, model.model.layers, prompts, tmp_path / "a.h5", batch_size=4)
    monkeypatch.setattr(model, "forward", _OOMOnBig(model.forward, 0, RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        extract_to_store(model, tok, model.model.layers, prompts, tmp_path / "b.h5", batch_size=4)
    assert not list(tmp_path.iterdir())


def test_generation_oom_backoff(model, tok, prompts, monkeypatch, caplog):
    from zhunt.models.generation import generate

    texts = list(prompts["text"][:5])
    ref = generate(model, tok, texts, max_new_tokens=3, batch_size=4)
    fake = _OOMOnBig(model.generate, 1, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    monkeypatch.setattr(model, "generate", fake)
    with caplog.at_level("WARNING", logger="zhunt.models.batching"):
        got = generate(model, tok, texts, max_new_tokens=3, batch_size=4)
    assert fake.sizes[:3] == [4, 2, 1]
    assert "generation: out of memory on a batch of 4 prompts" in caplog.text
    assert [r["token_ids"] for r in got] == [r["token_ids"] for r in ref]


def test_scoring_oom_backoff(model, tok, prompts, monkeypatch, caplog):
    """Teacher-forced scoring (Exp. A's patched passes, the layer sweeps) halves a batch on OOM."""
    from zhunt.models.generation import SubspaceEdit, score

    texts = list(prompts["text"][:5])
    rng = np.random.default_rng(1)
    edits = [SubspaceEdit(None, rng.normal(size=D).astype(np.float32), "full") for _ in texts]
    kw = dict(candidates=[[5, 6]] * 5, continuations=[[[7, 8], [9, 10, 11]]] * 5, layer_module=1, site="input",
              edits=edits, batch_size=4)
    ref = score(model, tok, texts, **kw)
    fake = _OOMOnBig(model.forward, 2, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    monkeypatch.setattr(model, "forward", fake)
    with caplog.at_level("WARNING", logger="zhunt.models.batching"):
        got = score(model, tok, texts, **kw)
    # a batch of 4 prompts: its prefill (4 rows) does not fit -> 2 + 2 prompts; the first half's prefill
    # (2 rows) fits but its continuation pass (2 prompts x 2 continuations = 4 rows) does not -> 1 + 1
    assert fake.sizes[:5] == [4, 2, 4, 1, 2]
    assert "scoring: out of memory on a batch of 4 prompts; retrying it as 2 + 2" in caplog.text
    assert "scoring: out of memory on a batch of 2 prompts; retrying it as 1 + 1" in caplog.text
    np.testing.assert_array_equal(got["first_argmax"], ref["first_argmax"])
    for key in ("lp_first", "lp_candidates", "lp_continuations"):
        np.testing.assert_allclose(got[key], ref[key], atol=1e-4, rtol=0)  # other padding: float-level
    monkeypatch.setattr(model, "forward", _OOMOnBig(model.forward, 0, torch.cuda.OutOfMemoryError("oom")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        score(model, tok, texts, **kw)


def test_das_oom_backoff_accumulates_the_same_gradient(model, tok, prompts, monkeypatch, caplog):
    """DAS runs a minibatch that does not fit as accumulated parts: the same loss and gradient."""
    from zhunt.experiments import das

    texts = list(prompts["text"][:8])
    rng = np.random.default_rng(2)
    sources = [rng.normal(size=D).astype(np.float32) for _ in texts]
    y = rng.integers(4, 40, size=len(texts)).tolist()
    kw = dict(layer=1, site="input", k=3, steps=3, lr=0.05, batch_size=8, random_state=0)
    ref = das.fit_das(model, tok, texts, sources, y, **kw)
    fake = _OOMOnBig(model.forward, 3, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    monkeypatch.setattr(model, "forward", fake)
    with caplog.at_level("WARNING", logger="zhunt.models.batching"):
        got = das.fit_das(model, tok, texts, sources, y, **kw)
    assert fake.sizes[:3] == [8, 4, 2] and set(fake.sizes[2:]) == {2}  # 8 -> 4 -> 2, kept for later steps
    assert caplog.text.count("DAS: out of memory") == 2
    assert abs(got.losses[0] - ref.losses[0]) < 1e-5  # (Adam's first step is sign-like: later steps
    monkeypatch.undo()                                 # amplify float-level gradient differences)
    # the accumulated gradient equals the one-pass gradient to float precision
    data = das._training_data(model, tok, texts, sources, y, k=3, steps=1, batch_size=8, add_special_tokens=True,
                              patch_special=False, prefixes=None)
    grads, losses = [], []
    for chunk in (8, 3, 1):
        basis = das._Basis(das._initial_basis(None, 3, D, 0).T, 0)
        with das._frozen(model):
            loss, _ = das._accumulated_step(model, das._resolve_layer(model, 1), basis, data, list(range(8)), chunk,
                                            site="input", patch_special=False, patch_prefix=False, device="cpu",
                                            keep={})
        losses.append(loss)
        grads.append(next(basis.parameters()).grad.clone())
    assert float(grads[0].abs().max()) > 1e-3
    for g, l in zip(grads[1:], losses[1:]):
        np.testing.assert_allclose(l, losses[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(g.numpy(), grads[0].numpy(), atol=1e-5, rtol=0)


def test_float16_store_refuses_overflow(tmp_path):
    from zhunt.data.store import StoreWriter

    w = StoreWriter(tmp_path / "s.h5", num_layers=1, hidden_size=2, n_rows_total=2, dtype="float16")
    h = [np.zeros((2, 2), np.float32), np.array([[1.0, -7e4], [0.0, 0.0]], np.float32)]
    with pytest.raises(ZhuntError, match=r"^extraction\.dtype: hidden index 1 holds \|h\| up to 7e\+04"):
        w.append([{"prompt_id": "a", "lang": "en", "length": 2}], h, np.zeros(2, int), np.zeros(2, bool))
    assert not list(tmp_path.iterdir())
