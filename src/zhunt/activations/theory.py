"""Seed-003 theory tested on stored activations, at every depth.

Seed 003 models the residual stream as an accumulation ``h_{j+1} = h_j + f_j(h_j)``
and asks whether two languages presenting the same problem converge. The
``theory`` rule measures every quantity that argument uses, on the mean-pooled
(or last-token) prompt states of an :class:`zhunt.data.store.ActivationStore`,
at every hidden-state index ``j = 0..L``. Each quantity lives in the module
named after it — :mod:`~zhunt.activations.paired` (the paired states),
:mod:`~zhunt.activations.snr` (SNR, Theorem 2), :mod:`~zhunt.activations.contributions`
(Gram, cross terms), :mod:`~zhunt.activations.alignment` (NN retrieval, alignment
depth), :mod:`~zhunt.activations.crossmap`, :mod:`~zhunt.activations.cointegration`,
:mod:`~zhunt.activations.garch` — and this module combines them
(:func:`theory_tests`, :func:`theory_summary`, :func:`theory`); the figures are in
:mod:`zhunt.report.theory` and the files are written by :mod:`zhunt.stages.theory`. The
definitions below are the one list for all of them.

Notation and definitions (fixed here once)
------------------------------------------
* ``h_l^i(j)`` in R^d: pooled hidden state of problem ``i`` in language ``l``
  at hidden index ``j`` (``j = 0`` embeddings, ``j = l + 1`` output of
  decoder layer ``l``). Problems are matched across languages by
  ``prompt_id``; every problem must exist in every language.
* ``f_j^i = h^i(j + 1) - h^i(j)``: the contribution (pooled update) of
  decoder layer ``j``, ``j = 0..L-1`` (pooling is linear, so this is the
  pooled per-token update).
* Pair ``(a, b)`` of languages: ``delta_j^i = f_j^{i,a} - f_j^{i,b}`` and
  ``Delta^i(j) = h^{i,a}(j) - h^{i,b}(j)``.
* Mean pairwise squared distance of a set ``X`` (N, d), over ordered pairs
  ``i != k``: ``mpd(X) = 1/(N(N-1)) sum_{i!=k} ||x_i - x_k||^2
  = 2/(N-1) sum_i ||x_i - xbar||^2`` (the identity used for speed).
* ``D_same(j) = mean_i ||Delta^i(j)||^2``;
  ``D_diff(j) = (mpd(H_a(j)) + mpd(H_b(j))) / 2``;
  ``SNR(j) = D_same(j) / D_diff(j)`` — small means the languages are close
  relative to how far problems are apart (seed 003 reports 1.663 -> 1.325,
  strictly falling, on a synthetic residual model).
* Theorem 2: ``E||delta_j||^2 = mean_i ||delta_j^i||^2``,
  ``sigma_j^2 = (mpd(F_a(j)) + mpd(F_b(j))) / 2`` and
  ``delta_ratio(j) = E||delta_j||^2 / sigma_j^2``. *Exactly*,
  ``D_same(j+1) = D_same(j) + E||delta_j||^2 + cross_same(j)`` with
  ``cross_same(j) = 2 mean_i <Delta^i(j), delta_j^i>`` and
  ``D_diff(j+1) = D_diff(j) + sigma_j^2 + cross_diff(j)`` with
  ``cross_diff(j)`` the language-averaged ``2/(N-1) sum_i <h_i - hbar, f_i - fbar>``.
  If both cross terms vanish (the orthogonality assumption), the mediant
  inequality gives ``SNR(j+1) < SNR(j)  <=>  delta_ratio(j) < SNR(j)`` — the
  theorem's condition. We report the condition, the observed change, whether
  they agree, and the cross terms so the failure of the assumption is visible.
* Disagreement ratio of layer ``j``: ``sqrt(mean_i ||delta_j^i||^2 /
  mean_{i,l in {a,b}} ||f_j^{i,l}||^2)`` (a ratio of root-mean-squares; two
  independent contributions of equal size give ``sqrt 2``). Seed: 1.4-1.6,
  constant in depth.
* Gram of contributions: per prompt (every prompt of every language), the
  L x L matrix of cosines ``cos(f_j, f_k)``; its absolute value averaged over
  prompts. Reported: mean and max of the off-diagonal entries of that
  average (seed: 0.046 / 0.171).
* Cross-term fraction of the pair: with ``S^i = sum_j delta_j^i`` (the
  accumulated disagreement, the embedding difference excluded),
  ``sum_i ||S^i||^2 = sum_{i,j} ||delta_j^i||^2 + 2 sum_i sum_{j<k} <delta_j^i, delta_k^i>``;
  the fraction is the second term over the left side, summed over problems
  before dividing (signed; seed: 9.6 %).
* Nearest-neighbour retrieval from language ``a`` to ``b`` at ``j``: problem
  ``i`` is correct when ``argmax_k cos(x_a^i, x_b^k) = i`` (raw cosine, no
  centring); accuracy = mean over ``i``. Spaces: ``h`` (pooled states at
  ``j``) and ``update`` (``f_{j-1}``, the update that produced ``h(j)``, so
  both spaces share the x-axis "after layer j-1"; ``j >= 1``).
* Alignment depth ``L*(l)``: the first ``j`` at which retrieval from ``l`` to
  the reference language (``en``; for ``en`` itself ``zh``, else the first
  other language) reaches the threshold (default 0.9); NaN if never.
  ``L*(x, l)``: the first ``j`` from which problem ``x`` in ``l`` is
  retrieved correctly at every later ``j``; ``L + 1`` if it is wrong at the
  last index ("never"). Two per-problem aggregates: ``L*_max(x) = max_l
  L*(x, l)`` (aligned in every language; censored at ``L + 1`` as soon as
  one language loses the problem at the last layers) and ``L*(x) = mean_l
  L*(x, l)``, the one related to category (Kruskal-Wallis) and to length
  (Spearman; generation length when given, otherwise the prompt token
  length averaged over languages).
* Cross-lingual maps (per ``j`` and ordered pair ``a -> b``): each language
  is reduced to its own top-``r`` PCA coordinates (``r = min(pca_dim,
  n_train - 2, d)``, basis fitted on the training problems only), then
  (i) orthogonal Procrustes on centred coordinates
  (:func:`scipy.linalg.orthogonal_procrustes`, no scaling) and (ii) affine
  least squares with intercept (ridge only if ``n_train <= r + 1``: ``lambda
  = 1e-2 tr(X^T X) / r``). Held-out ``R^2 = 1 - SSE / SST`` pooled over a
  K-fold split of problems (default 10 folds, fixed seed), ``SST`` around the
  training mean of the target, measured in the target's reduced
  coordinates. ``kappa`` is the 2-norm condition number of the affine map's
  linear part fitted on all problems.
* Cointegration: per problem, the series ``t = j = 0..L`` of the pair's
  states projected on the top-``c`` principal components of all pooled states
  (every ``j``, language and problem; centred), a ``2c``-dim series of length
  ``L + 1``; Johansen (constant, one lagged difference), rank by the
  sequential trace test at ``COINT_LEVEL`` against simulated finite-sample
  critical values (:func:`johansen_null_crit`); at that rank a VECM gives the
  error-correction coefficients and ``|alpha_a| / |alpha_b|``
  (:func:`vecm_alpha`); labels by :func:`cointegration_verdict` and
  :func:`cointegration_model_verdict` (:data:`COINT_RULE`).
* GARCH: on seed 003's ``y_t = ||delta_l^(t)||^2``, ``delta_l^(t) = f_l^(t)(zh) -
  f_l^(t)(en)`` with ``f_l^(t) = h_{l+1}^(t) - h_l^(t)`` the update of layer
  ``l`` at generation step ``t`` (:func:`zhunt.experiments.behaviour.step_distances`); see
  :func:`garch_beta`, :func:`garch_verdict`, :func:`garch_model_verdict`, :func:`garch_table`.
* Verdicts: every label comes from one function with its thresholds as named
  module constants (``*_RULE`` strings print them): :func:`snr_verdict`,
  :func:`theorem2_verdict`, :func:`alignment_verdict`, :func:`crossmap_verdict`,
  :func:`cointegration_verdict` / :func:`cointegration_model_verdict`,
  :func:`garch_verdict` / :func:`garch_model_verdict`.

Site and digit confound
-----------------------
Every quantity above runs over all hidden indices ``j``, so the site
(:mod:`zhunt.models.site`) only names them: the tables carry ``site``,
``hidden_index`` (= ``j``) and ``layer`` = the decoder layer whose stream at
that site is ``j`` (``input``: ``l = j``; ``output``: ``l = j - 1``;
:func:`site_layer`). Paired prompts share their numeral tokens, so NN
retrieval is also run on the numeral-free pooling (``tokens = no_numerals``
rows, :mod:`zhunt.data.numerals`), and :func:`digit_confound_nn` compares the
accuracy above chance at the analysed layers with the same at ``j = 0``
(embedding output: shared numerals, no computation) and without numerals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from zhunt.activations.alignment import (ALIGNMENT_RULE, alignment_depth_languages, alignment_verdict,
                                         depth_vs_category, depth_vs_length, nn_retrieval_table, problem_depths)
from zhunt.activations.cointegration import (ALPHA_RATIO_THRESHOLD, COINT_LEVEL, COINT_RULE,
                                             cointegration_model_verdict, cointegration_table)
from zhunt.activations.contributions import contribution_gram, cross_term_fraction, offdiag_stats
from zhunt.activations.crossmap import CROSSMAP_RULE, crossmap_table, crossmap_verdict
from zhunt.activations.paired import PairedStates, default_pair, reference_language
from zhunt.activations.snr import SNR_RULE, THEOREM2_RULE, monotonicity, snr_profile, snr_verdict, theorem2_verdict
from zhunt.errors import ZhuntError

__all__ = ["SEED_003", "site_layer", "digit_confound_nn", "check_theory_settings", "TheoryTables", "theory",
           "TheoryResults", "theory_tests", "alignment_depth_table", "theory_summary"]

#: Seed-003 reference values (a synthetic 6-layer residual model, not a pretrained LLM).
SEED_003 = {
    "snr_first": (1.663, "SNR at the first reported layer"),
    "snr_last": (1.325, "SNR at the last reported layer"),
    "snr_monotone": (1.0, "SNR strictly decreasing at every layer"),
    "snr_violations": (0.0, "layers where SNR does not fall"),
    "snr_spearman_depth": (-1.0, "implied by strict monotonicity"),
    "theorem2_condition_holds": (math.nan, "every layer satisfies the condition"),
    "theorem2_agreement": (math.nan, "condition predicts the SNR change at every layer"),
    "gram_offdiag_mean_abs_cos": (0.046, "orthogonality of layer contributions"),
    "gram_offdiag_max_abs_cos": (0.171, ""),
    "cross_term_fraction": (0.096, "cross-lingual Pythagorean cross terms"),
    "disagreement_ratio_mean": (1.5, "||delta_k||/||f_k|| ~ 1.4-1.6"),
    "disagreement_ratio_cv": (0.0, "constant across depth"),
}


# =============================================================================== site / digit confound
def site_layer(j, site: str, num_layers: int):
    """The decoder layer ``l`` whose stream at ``site`` is hidden index ``j`` (:func:`zhunt.models.site.hidden_index`).

    ``input``: ``l = j`` (``j = L``, the last output, is read by no decoder
    layer); ``output``: ``l = j - 1`` (``j = 0``, the embedding output, is no
    layer's output). Returns a pandas ``Int64`` array with ``<NA>`` there.
    """
    from zhunt.models.site import check_site

    j = np.asarray(j, dtype=np.int64)
    lay = j if check_site(site) == "input" else j - 1
    out = pd.array(lay, dtype="Int64")
    out[(lay < 0) | (lay >= num_layers)] = pd.NA
    return out


def _with_site(df: pd.DataFrame, site: str, num_layers: int) -> pd.DataFrame:
    """``site``, ``hidden_index`` (= ``j``) and a site-relative ``layer`` for a table with a ``j`` column."""
    df = df.copy()
    df["layer"] = site_layer(df["j"].to_numpy(), site, num_layers)
    df.insert(0, "hidden_index", df["j"].astype(int))
    df.insert(0, "site", site)
    return df


def digit_confound_nn(nn: pd.DataFrame, pair, hidden_indices, n_problems: int, site: str, num_layers: int,
                      model: str = "") -> pd.DataFrame:
    """Digit-confound rows of the NN-retrieval table (both directions of ``pair``, space ``h``).

    The signal is the retrieval accuracy above chance, ``max(accuracy - 1 / N, 0)``
    (``N`` problems; below chance is no signal). Per hidden index ``j`` of ``hidden_indices``: the value
    with every token (``value``), at ``j = 0`` (``value_embedding``), both
    numeral-free (``tokens = no_numerals`` rows of ``nn``) and
    :func:`zhunt.data.numerals.digit_confound_fractions`.
    """
    from zhunt.data.numerals import digit_confound_fractions

    chance = 1.0 / n_problems
    acc = nn[nn["space"] == "h"].set_index(["tokens", "src_lang", "tgt_lang", "j"])["accuracy"]
    rows = []
    for j in sorted({int(x) for x in hidden_indices}):
        for a, b in (tuple(pair), tuple(pair)[::-1]):
            vals = [max(float(acc[(tok, a, b, jj)]) - chance, 0.0)
                    for tok, jj in (("all", j), ("all", 0), ("no_numerals", j), ("no_numerals", 0))]
            rows.append({"model": model, "stage": "nn_retrieval", "site": site, "hidden_index": j,
                         "layer": site_layer([j], site, num_layers)[0], "src_lang": a, "tgt_lang": b,
                         "measure": "accuracy_above_chance", "chance": chance, "value": vals[0],
                         "value_embedding": vals[1], "value_no_numerals": vals[2],
                         "value_embedding_no_numerals": vals[3], **digit_confound_fractions(*vals)})
    return pd.DataFrame(rows)


# =============================================================================== the rule's tables
def check_theory_settings(nn_threshold: float, pca_dim: int) -> None:
    """User errors in the theory settings (config keys ``theory.*``)."""
    if not 0 < nn_threshold <= 1:
        raise ZhuntError("theory.nn_threshold", f"must be in (0, 1], got {nn_threshold}")
    if pca_dim < 1:
        raise ZhuntError("theory.pca_dim", f"must be >= 1, got {pca_dim}")


@dataclass
class TheoryTables:
    """What :func:`theory` measures, as the rule's tables.

    Attributes
    ----------
    R : TheoryResults
        Every measurement (:func:`theory_tests`), for the figures.
    summary : DataFrame
        :func:`theory_summary`.
    digit : DataFrame
        :func:`digit_confound_nn` (empty without numeral-free states or layers).
    tables : dict
        ``{name: DataFrame}`` of the rule's tables: ``snr``, ``summary``, ``gram``, ``nn``,
        ``depth``, ``crossmap``, ``coint``; the ones indexed by hidden index ``j`` carry
        ``site``, ``hidden_index`` and the site-relative ``layer`` (:func:`site_layer`).
    """

    R: "TheoryResults"
    summary: pd.DataFrame
    digit: pd.DataFrame
    tables: dict


def theory(P: PairedStates, P_nonum: PairedStates | None = None, *, generation_lengths=None,
           nn_threshold: float = 0.9, pca_dim: int = 32, coint_components: int = 2, seed: int = 0,
           n_folds: int = 10, site: str = "input", layers=(), model_name: str = "") -> TheoryTables:
    """The seed-003 tests on one model's paired states.

    Parameters
    ----------
    P : PairedStates
        Pooled states of every problem in every language at every hidden index
        (:func:`zhunt.activations.paired.load_paired`).
    P_nonum : PairedStates, optional
        The same under the numeral-free pooling (:mod:`zhunt.data.numerals`): NN retrieval
        is also run on it (``tokens = no_numerals`` rows) and feeds the digit-confound rows.
    generation_lengths : pandas.Series or mapping, optional
        Per-problem generation length (index: problem id). ``None``: the prompt token length
        (mean over languages) is used instead, and the summary says so.
    nn_threshold : float
        Retrieval accuracy that defines ``L*(l)``.
    pca_dim : int
        Reduced dimension of the cross-lingual maps.
    coint_components : int
        Principal components per language in the cointegration series.
    seed : int
        Seed of the K-fold split.
    n_folds : int
        K of the held-out cross-map evaluation.
    site : {"input", "output"}
        Labels the tables: every table indexed by hidden index ``j`` gets
        ``site``, ``hidden_index`` (= ``j``) and ``layer`` = the decoder layer
        whose stream at ``site`` is ``j`` (:func:`site_layer`). The numbers
        themselves cover every ``j`` and do not depend on the site.
    layers : sequence of int
        Decoder layers of the digit-confound rows (read at ``hidden_index(l, site)``).
    model_name : str
        The ``model`` column of the digit-confound rows.

    Returns
    -------
    TheoryTables

    Raises
    ------
    ZhuntError
        A bad setting (:func:`check_theory_settings`) or fewer than 2 decoder layers.
    """
    from zhunt.models.site import hidden_index

    check_theory_settings(nn_threshold, pca_dim)
    L = P.num_layers
    if L < 2:
        raise ZhuntError(P.source, f"need at least 2 decoder layers, store has {L}")
    gl = None
    if generation_lengths is not None:
        gl = pd.Series(generation_lengths, dtype=np.float64)
        gl.index = gl.index.astype(str)
        gl = gl.reindex(P.problems)
    R = theory_tests(P, P_nonum, nn_threshold=nn_threshold, pca_dim=pca_dim, coint_components=coint_components,
                     generation_lengths=gl, seed=seed, n_folds=n_folds)
    summary = theory_summary(R, nn_threshold=nn_threshold, coint_components=coint_components, n_folds=n_folds)
    digit = pd.DataFrame()
    if P_nonum is not None and len(layers):
        digit = digit_confound_nn(R.nn, R.pair, [hidden_index(l, site) for l in layers], len(P.problems), site, L,
                                  model_name)
    tables = {"snr": _with_site(R.snr, site, L), "summary": summary, "gram": R.gram,
              "nn": _with_site(R.nn, site, L), "depth": R.depth.assign(site=site),
              "crossmap": _with_site(R.crossmap, site, L), "coint": R.coint}
    return TheoryTables(R=R, summary=summary, digit=digit, tables=tables)


@dataclass
class TheoryResults:
    """Everything :func:`theory_tests` measures on one :class:`PairedStates` (``L`` decoder layers).

    ``pair`` is the main language pair (:func:`default_pair`), ``pairs`` every
    unordered pair (main first); ``snr`` the :func:`snr_profile` of each pair
    (column ``pair``), ``mono`` the main pair's :func:`monotonicity`; ``G`` the
    ``(L, L)`` :func:`contribution_gram` of every prompt, ``gram`` it as rows,
    ``ctf`` the main pair's :func:`cross_term_fraction`; ``nn`` the NN
    retrieval rows (``tokens`` = all / no_numerals), ``depth_languages``
    (:func:`alignment_depth_languages`), ``depth_problems``
    (:func:`alignment_depth_problems` per language, ``max``, ``mean``),
    ``depth`` the alignment-depth table; ``category`` / ``kw_H`` / ``kw_p``
    (:func:`depth_vs_category`), ``length_kind`` / ``spearman``
    (:func:`depth_vs_length`); ``crossmap`` (:func:`crossmap_table`); ``coint``
    (:func:`cointegration_table`).
    """

    P: PairedStates
    pair: tuple
    pairs: list
    snr: pd.DataFrame
    mono: dict
    G: np.ndarray
    gram: pd.DataFrame
    ctf: float
    nn: pd.DataFrame
    depth_languages: pd.DataFrame
    depth_problems: pd.DataFrame
    depth: pd.DataFrame
    category: pd.DataFrame
    kw_H: float
    kw_p: float
    length_kind: str
    length: np.ndarray
    spearman: tuple
    crossmap: pd.DataFrame
    coint: pd.DataFrame

    @property
    def pair_name(self) -> str:
        """``"a-b"`` of the main pair."""
        return f"{self.pair[0]}-{self.pair[1]}"

    @property
    def main_snr(self) -> pd.DataFrame:
        """The main pair's rows of :attr:`snr` (``j = 0..L``)."""
        return self.snr[self.snr["pair"] == self.pair_name]

    @property
    def updates_snr(self) -> pd.DataFrame:
        """The main pair's rows with an update ``j -> j + 1`` (``j < L``)."""
        main = self.main_snr
        return main[main["j"] < self.P.num_layers]


def theory_tests(P: PairedStates, P_nonum: PairedStates | None = None, *, nn_threshold: float = 0.9,
                 pca_dim: int = 32, coint_components: int = 2, generation_lengths=None, seed: int = 0,
                 n_folds: int = 10) -> TheoryResults:
    """Every seed-003 measurement on paired states (:func:`theory` documents the parameters).

    ``P_nonum``: the same states under the numeral-free pooling (extra NN rows,
    ``tokens = no_numerals``); ``generation_lengths``: a Series indexed like
    ``P.problems`` or None (then the prompt token length, mean over languages).
    """
    L = P.num_layers
    pair = default_pair(P.langs)
    pairs = [pair] + [p for p in combinations(P.langs, 2) if set(p) != set(pair)]
    snr = pd.concat([snr_profile(P.states(a), P.states(b)).assign(pair=f"{a}-{b}", lang_a=a, lang_b=b)
                     for a, b in pairs], ignore_index=True)
    snr.insert(1, "layer", snr["j"] - 1)
    snr = snr[["pair", "lang_a", "lang_b"] + [c for c in snr.columns if c not in ("pair", "lang_a", "lang_b")]]
    mono = monotonicity(snr.loc[snr["pair"] == f"{pair[0]}-{pair[1]}", "SNR"])
    G = contribution_gram(np.concatenate([P.updates(l) for l in P.langs], axis=1))  # (L, K N, d) -> (L, L)
    gram = pd.DataFrame([{"layer_j": j, "layer_k": k, "mean_abs_cos": G[j, k]} for j in range(L) for k in range(L)])
    ctf = cross_term_fraction(P.updates(pair[0]) - P.updates(pair[1]))
    nn = nn_retrieval_table(P).assign(tokens="all")
    if P_nonum is not None:
        nn = pd.concat([nn, nn_retrieval_table(P_nonum).assign(tokens="no_numerals")], ignore_index=True)
    ldf = alignment_depth_languages(nn[nn["tokens"] == "all"], P.langs, threshold=nn_threshold)
    pdf = problem_depths(P, "h")
    gl = generation_lengths
    length_kind = "generation_length" if gl is not None else "prompt_tokens_mean"
    length = gl.to_numpy() if gl is not None else P.prompt_length.mean(axis=0)
    cat_tab, kw_H, kw_p = depth_vs_category(pdf["mean"], pdf["category"])
    return TheoryResults(
        P=P, pair=pair, pairs=pairs, snr=snr, mono=mono, G=G, gram=gram, ctf=ctf, nn=nn, depth_languages=ldf,
        depth_problems=pdf, depth=alignment_depth_table(P, ldf, pdf, cat_tab, length), category=cat_tab,
        kw_H=kw_H, kw_p=kw_p, length_kind=length_kind, length=length,
        spearman=depth_vs_length(pdf["mean"], length),
        crossmap=crossmap_table(P, pca_dim=pca_dim, n_folds=n_folds, seed=seed),
        coint=cointegration_table(P, pair, components=coint_components))


def alignment_depth_table(P: PairedStates, ldf: pd.DataFrame, pdf: pd.DataFrame, cat_tab: pd.DataFrame,
                          length) -> pd.DataFrame:
    """Alignment depth ``L*`` of each language (``kind = language``), problem (one row per language,
    ``max`` and ``mean``; ``kind = problem``) and category (``kind = category``) in one table."""
    rows = [{"kind": "language", "name": r.lang, "lang": r.lang, "ref": r.ref, "space": r.space,
             "L_star": r.L_star, "category": "", "length": math.nan, "n": len(P.problems),
             "max_accuracy": r.max_accuracy} for r in ldf.itertuples()]
    for i, r in pdf.iterrows():
        for l in list(P.langs) + ["max", "mean"]:
            rows.append({"kind": "problem", "name": r["problem"], "lang": l,
                         "ref": reference_language(l, P.langs) if l in P.langs else "", "space": "h",
                         "L_star": float(r[l]), "category": r["category"], "length": float(length[i]),
                         "n": 1, "max_accuracy": math.nan})
    for r in cat_tab.itertuples():
        rows.append({"kind": "category", "name": r.category, "lang": "mean", "ref": "", "space": "h",
                     "L_star": r.mean_L_star, "category": r.category, "length": math.nan, "n": r.n,
                     "max_accuracy": math.nan})
    return pd.DataFrame(rows)


def _summary_row(stat, value, note="") -> dict:
    """One row of the theory summary, with the seed's value (:data:`SEED_003`) and both notes."""
    sv, snote = SEED_003.get(stat, (math.nan, ""))
    return {"statistic": stat, "value": float(value) if value is not None else math.nan,
            "seed_value": sv, "note": "; ".join(x for x in (note, snote) if x)}


def _snr_rows(R: TheoryResults) -> list[dict]:
    """Summary rows of the SNR, Theorem 2 and the layer contributions."""
    row, L, pname = _summary_row, R.P.num_layers, R.pair_name
    main, upd, mono = R.main_snr, R.updates_snr, R.mono
    cond, agree = upd["condition_holds"].astype(bool), upd["agree"].astype(bool)
    dr = upd["disagreement_ratio"].to_numpy()
    g_mean, g_max = offdiag_stats(R.G)
    rows = [
        row("snr_first", main["SNR"].iloc[0], f"{pname}, j=0 (embeddings)"),
        row("snr_last", main["SNR"].iloc[-1], f"{pname}, j={L}"),
        row("snr_min", main["SNR"].min(), f"at j={int(main['j'].iloc[int(np.argmin(main['SNR']))])}"),
        row("snr_max", main["SNR"].max(), f"at j={int(main['j'].iloc[int(np.argmax(main['SNR']))])}"),
        row("snr_monotone", float(mono["monotone"]), "1 = strictly decreasing over j=0..L"),
        row("snr_violations", mono["violations"], f"of {L} steps"),
        row("snr_spearman_depth", mono["spearman"], f"p={mono['spearman_p']:.3g}"),
        row("theorem2_condition_holds", int(cond.sum()), f"layers of {len(cond)} with E|d|^2/sigma^2 < SNR"),
        row("theorem2_agreement", int(agree.sum()), f"layers of {len(agree)} where the condition predicts "
                                                     f"the sign of the SNR change"),
    ]
    for a, b in R.pairs[1:]:
        m = monotonicity(R.snr.loc[R.snr["pair"] == f"{a}-{b}", "SNR"])
        rows.append(row(f"snr_violations:{a}-{b}", m["violations"], f"spearman {m['spearman']:.3f}"))
    return rows + [
        row("gram_offdiag_mean_abs_cos", g_mean, f"all {len(R.P.langs) * len(R.P.problems)} prompts"),
        row("gram_offdiag_max_abs_cos", g_max),
        row("cross_term_fraction", R.ctf, pname),
        row("disagreement_ratio_mean", float(np.mean(dr)), f"{pname}, RMS ratio; sqrt(2)=1.414 if uncorrelated"),
        row("disagreement_ratio_cv", float(np.std(dr) / np.mean(dr)), "std/mean across layers"),
    ]


def _depth_map_rows(R: TheoryResults, nn_threshold: float, n_folds: int) -> list[dict]:
    """Summary rows of the alignment depth and the cross-lingual maps at the middle index."""
    row, L, pdf = _summary_row, R.P.num_layers, R.depth_problems
    sp_rho, sp_p, sp_n = R.spearman
    j_mid = (L + 1) // 2
    mid = R.crossmap[R.crossmap["j"] == j_mid]
    rows = [row(f"L_star:{r.lang}:{r.space}", r.L_star, f"vs {r.ref}, threshold {nn_threshold}; "
                                                       f"max acc {r.max_accuracy:.3f}")
            for r in R.depth_languages.itertuples()]
    return rows + [
        row("L_star_problem_median", float(np.median(pdf["mean"])), f"mean over languages of L*(x, l); "
                                                                    f"{L + 1} = never"),
        row("L_star_problem_never", int(np.sum(pdf["max"] > L)), "problems not retrieved in some language "
                                                                 "at the last index"),
        row("L_star_category_kruskal_p", R.kw_p, f"H={R.kw_H:.3g}, {len(R.category)} categories"),
        row("L_star_length_spearman", sp_rho, f"vs {R.length_kind}, p={sp_p:.3g}, n={sp_n}"
                                              + ("; undefined: every length is the same (all generations hit "
                                                 "max_new_tokens?)" if np.nanstd(np.asarray(R.length, float)) == 0
                                                 else "")),
        row("crossmap_procrustes_r2_mid", float(mid["procrustes_r2_heldout"].mean()),
            f"j={j_mid}, mean over {len(mid)} ordered pairs, {n_folds}-fold"),
        row("crossmap_affine_r2_mid", float(mid["affine_r2_heldout"].mean()), f"j={j_mid}"),
        row("crossmap_affine_kappa_mid", float(mid["affine_kappa"].median()), f"j={j_mid}, median"),
    ]


def _coint_rows(R: TheoryResults, coint_components: int, cmv: dict) -> list[dict]:
    """Summary rows of the cointegration ranks (``cmv``: :func:`cointegration_model_verdict`)."""
    row, L, co, pair = _summary_row, R.P.num_layers, R.coint, R.pair
    ranks = co["rank"].dropna().astype(int)
    dist = ranks.value_counts().sort_index()
    rows = [row("cointegration_rank_median", float(ranks.median()) if len(ranks) else math.nan,
                f"{R.pair_name}, {2 * coint_components}-dim series of length {L + 1}")]
    for k in range(2 * coint_components + 1):
        rows.append(row(f"cointegration_rank_{k}", int(dist.get(k, 0)), "problems"))
    rows.append(row("cointegration_failed", int(co["rank"].isna().sum()), "problems"))
    return rows + [
        row("cointegration_rank_tabulated_median", float(co["rank_tabulated"].median()),
            "statsmodels' tabulated critical values (the rule before: over-rejects)"),
        row("cointegration_rate", cmv["rate"], (f"{cmv['n_cointegrated']}/{cmv['n']} problems rank >= 1, Wilson 95% "
                                                f"[{cmv['lo']:.3g}, {cmv['hi']:.3g}], binomial p vs {COINT_LEVEL:g} = "
                                                f"{cmv['binom_p']:.3g}" if cmv["n"] else "no problem measured")
            + f"; verdict: {cmv['verdict']}"),
        row("cointegration_alpha_ratio_median", cmv["alpha_ratio_median"],
            f"|alpha_{pair[0]}|/|alpha_{pair[1]}| (geometric median over cointegrated problems); "
            f"{cmv['adjusts'] or 'no verdict (not cointegrated)'}; threshold {ALPHA_RATIO_THRESHOLD:g}"),
    ]


def _verdict_rows(R: TheoryResults, nn_threshold: float, cmv: dict) -> list[dict]:
    """The verdict rows (value 1 = the positive label), each rule in its note."""
    row, pname = _summary_row, R.pair_name
    j_mid = (R.P.num_layers + 1) // 2
    mid = R.crossmap[R.crossmap["j"] == j_mid]
    v_snr = snr_verdict(R.main_snr["SNR"])
    v_t2 = theorem2_verdict(R.main_snr)
    v_map = crossmap_verdict(float(mid["procrustes_r2_heldout"].mean()), float(mid["affine_r2_heldout"].mean()))
    rows = [
        row("verdict:snr", float(v_snr == "monotone decreasing"), f"{pname}: {v_snr}; rule: {SNR_RULE}"),
        row("verdict:theorem2", float(v_t2 == "holds at every layer"), f"{pname}: {v_t2}; rule: {THEOREM2_RULE}"),
    ]
    for r in R.depth_languages[R.depth_languages["space"] == "h"].itertuples():
        v = alignment_verdict(r.L_star)
        rows.append(row(f"verdict:alignment:{r.lang}", float(v != "never aligned"),
                        f"{r.lang}->{r.ref}: {v}; rule: {ALIGNMENT_RULE} = {nn_threshold:g}"))
    return rows + [
        row("verdict:crossmap", float(v_map == "affine needed"), f"j={j_mid}: {v_map}; rule: {CROSSMAP_RULE}"),
        row("verdict:cointegration", float(cmv["verdict"] == "cointegrated"),
            f"{pname}: {cmv['verdict']}" + (f", {cmv['adjusts']}" if cmv["adjusts"] else "") + f"; rule: {COINT_RULE}"),
    ]


def theory_summary(R: TheoryResults, *, nn_threshold: float, coint_components: int, n_folds: int) -> pd.DataFrame:
    """The theory summary: one row per statistic (``statistic, value, seed_value, note``), verdicts last."""
    cmv = cointegration_model_verdict(R.coint["rank"], R.coint["alpha_ratio"], *R.pair)
    return pd.DataFrame(_snr_rows(R) + _depth_map_rows(R, nn_threshold, n_folds)
                        + _coint_rows(R, coint_components, cmv) + _verdict_rows(R, nn_threshold, cmv))
