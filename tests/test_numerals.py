"""Digit confound: numeral tokens, the numeral-free pooling, and a planted store in which the
same-problem similarity across languages comes only from shared numeral tokens."""

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from zhunt.weights.masks import write_masks
from zhunt.data.numerals import digit_confound_fractions, is_numeral_text, numeral_token_ids
from zhunt.data.store import ActivationStore, StoreWriter
from zhunt.subspace import random_subspace


def test_numeral_text_rule():
    for text in ("23", " 4", "Ġ7", "x1", "１２", "٣"):
        assert is_numeral_text(text), text
    for text in ("", "plus", "三", "十四", "一共", "twenty", "?", "<bos>"):
        assert not is_numeral_text(text), text


def test_numeral_token_ids(tok):
    ids = tok("what is 23 plus 4?", add_special_tokens=True)["input_ids"]
    num = numeral_token_ids(tok, ids)
    assert sorted(tok.convert_ids_to_tokens(num.tolist())) == ["2", "3", "4"]
    assert numeral_token_ids(tok, []).size == 0


def test_fractions():
    f = digit_confound_fractions(0.8, 0.6, 0.1, 0.05)
    assert_allclose([f["frac_beyond_embedding"], f["frac_without_numerals"], f["frac_both"]], [0.25, 0.125, 0.0625])
    assert np.isnan(digit_confound_fractions(0.0, 0.1, 0.1, 0.1)["frac_both"])


# --------------------------------------------------------------------------- the pooling primitive
def _tiny_store(path):
    # one prompt: BOS, "7", "a", "8"; another made only of BOS + a numeral
    H = np.array([[100.0], [1.0], [2.0], [3.0], [50.0], [5.0]])
    meta = [{"prompt_id": "p", "lang": "en", "length": 4}, {"prompt_id": "q", "lang": "en", "length": 2}]
    with StoreWriter(path, num_layers=0, hidden_size=1, n_rows_total=6) as w:
        w.append(meta, [H], np.array([0, 17, 30, 18, 0, 17]), np.array([True, False, False, False, True, False]))
    return path


def test_pooled_excludes_ids(tmp_path):
    with ActivationStore(_tiny_store(tmp_path / "s.h5")) as st:
        assert_allclose(st.pooled(0)[:, 0], [2.0, 5.0])                         # BOS left out
        assert_allclose(st.pooled(0, exclude_ids=[17, 18])[:, 0], [2.0, 5.0 ])  # q falls back to its numeral
        assert_allclose(st.pooled(0, exclude_ids=[17])[:, 0], [2.5, 5.0])
        assert_allclose(st.pooled(0, pooling="last", exclude_ids=[18])[:, 0], [2.0, 5.0])
        assert_allclose(st.pooled(0, exclude_special=False, exclude_ids=[17, 18])[:, 0], [51.0, 50.0])


# --------------------------------------------------------------------------- planted confound
D, L, N = 16, 2, 20
LANG_WORDS = {"en": np.arange(100, 130), "zh": np.arange(200, 230)}  # language-specific word ids
NUMERALS = np.arange(10, 40)                                         # shared numeral ids


def _write_planted(tmp, template=False):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((300, D))
    meta, rows, toks, special = [], [[] for _ in range(L + 1)], [], []
    for i in range(N):
        nums = rng.choice(NUMERALS, 4, replace=False)
        for lang in ("en", "zh"):
            words = LANG_WORDS[lang][:3] if template else rng.choice(LANG_WORDS[lang], 3)
            ids = np.concatenate([[0], words, nums])
            meta.append({"prompt_id": f"p{i:02d}", "lang": lang, "length": len(ids)})
            for j in range(L + 1):
                noise = 0.0 if template else 0.05
                rows[j].append(emb[ids] + noise * rng.standard_normal((len(ids), D)))
            toks += ids.tolist()
            special += [True] + [False] * (len(ids) - 1)
    with StoreWriter(tmp / "acts.h5", num_layers=L, hidden_size=D, n_rows_total=len(toks)) as w:
        w.append(meta, [np.concatenate(r) for r in rows], np.array(toks), np.array(special))
    write_masks(tmp / "L1.h5", {"multihead": {"sigma": np.linspace(2, 1, D), "V": {4: random_subspace(4, D, 0)}}},
                {"layer": 1})
    return tmp


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Every token's state (at every hidden index) is a fixed vector of its token id plus noise.
    A problem = four numerals (shared by its en and zh prompts) and 3 words drawn at random from its
    language's vocabulary (independently per prompt): problem identity is carried by numerals only."""
    return _write_planted(tmp_path_factory.mktemp("digits"))


def _phase2(tmp, **kw):
    from test_zspace import measure
    from zhunt.activations.zspace import phase2

    return measure(phase2, tmp / "acts.h5", {1: tmp / "L1.h5"}, [1], [4], kinds=("multihead",), n_random=20,
                   **kw)


def test_phase2_numeral_free_pooling_removes_planted_confound(planted):
    res = _phase2(planted, poolings=("mean",), numeral_ids=NUMERALS, model_name="planted")
    t = res.table.set_index(["site", "tokens"])
    # normal pooling: the shared numerals make the same problem close across languages
    assert t.loc[("input", "all"), "ratio_full"] < 0.8
    # numeral-free pooling: no same-problem closeness is left (ratio ~ 1 or above: wording and language only)
    assert t.loc[("input", "no_numerals"), "ratio_full"] > 0.95
    dg = res.digit.set_index("measure")
    full = dg.loc["separation_full"]
    assert full["value"] > 0.2 and full["value_no_numerals"] < 0.05
    # nothing is computed here, so the embedding reproduces the whole signal ...
    assert full["value_embedding"] == pytest.approx(full["value"], abs=0.02)
    assert abs(full["frac_beyond_embedding"]) < 0.1
    # ... and nothing survives both controls
    assert full["frac_both"] < 0.2 and full["frac_without_numerals"] < 0.2
    assert {"site", "hidden_index", "layer", "k", "kind", "pooling"} <= set(dg.columns)


def test_nn_retrieval_numeral_free_pooling_removes_planted_confound(planted):
    from test_theory import theory_of

    res = theory_of(planted / "acts.h5", numeral_ids=NUMERALS, pca_dim=4, n_folds=2, layers=[1],
                    model_name="planted")
    nn = res.tables["nn"]
    h = nn[(nn["space"] == "h") & (nn["src_lang"] == "zh") & (nn["tgt_lang"] == "en") & (nn["j"] == 1)]
    acc = h.set_index("tokens")["accuracy"]
    assert acc["all"] >= 0.5             # shared numerals: retrieval far above chance (1/20)
    assert acc["no_numerals"] <= 0.25    # chance is 1/20; nothing but numerals carried identity
    dg = res.digit
    assert len(dg) == 2 and set(dg["src_lang"]) == {"zh", "en"} and (dg["hidden_index"] == 1).all()
    assert (dg["value"] > 0.4).all() and (dg["frac_both"] < 0.25).all()
    assert_allclose(dg["chance"], 1 / N)


def test_digit_tables_need_numeral_ids(planted):
    """Without numeral-free states there is nothing to compare: both digit tables are empty."""
    from test_theory import theory_of

    assert _phase2(planted).digit.empty
    assert theory_of(planted / "acts.h5", pca_dim=4, n_folds=2, layers=[1]).digit.empty


def test_one_template_without_numerals_is_no_signal(tmp_path):
    """A one-template prompt set without noise: numeral-free, every problem pools to the same vector
    (ratio 0/0 or inf); the stage still runs and reads that as no signal."""
    _write_planted(tmp_path, template=True)
    res = _phase2(tmp_path, numeral_ids=NUMERALS)
    d = res.digit
    mean = d[(d["pooling"] == "mean") & (d["measure"] == "separation_full")].iloc[0]
    assert mean["value"] > 0.2 and mean["value_no_numerals"] == 0 and mean["frac_both"] == 0
    # (input, embedding) x (all, no_numerals) x (mean, last), each: all, the kind, the (layer, kind)
    assert len(res.summary) == 2 * 2 * 2 * 3


def test_summary_reads_the_digit_tables(planted, tmp_path):
    """The summary states the surviving fraction per stage from the two digit-confound TSVs."""
    from zhunt.io import write_table
    from zhunt.report.summary import headline, measured, model_files
    from test_theory import theory_of

    base = tmp_path / "results" / "m"
    write_table(_phase2(planted, numeral_ids=NUMERALS, model_name="m").digit, base / "zspace/digit_confound.tsv")
    write_table(theory_of(planted / "acts.h5", numeral_ids=NUMERALS, pca_dim=4, n_folds=2, layers=[1],
                          model_name="m").digit, base / "theory/digit_confound.tsv")
    text = measured("digit_confound", "m", tmp_path / "results")
    assert "Phase 2 advantage of Z" in text and "NN retrieval zh→en" in text and "surviving both controls" in text
    h = headline(model_files(tmp_path / "results", "m"), "m")
    p2 = pd.read_csv(base / "zspace/digit_confound.tsv", sep="\t")
    row = p2[(p2["measure"] == "z_advantage") & (p2["pooling"] == "mean")].iloc[0]
    assert h["digit_phase2_frac_both"] == pytest.approx(row["frac_both"], nan_ok=True)
    assert h["digit_nn_frac_both"] < 0.25
