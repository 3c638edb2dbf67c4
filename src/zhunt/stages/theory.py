"""Stages of the seed-003 tests on the activations: rules ``theory`` and ``garch``.

Each ``run_<rule>`` follows the contract of :mod:`zhunt.stages`: it reads the store or the step
table, lets :mod:`zhunt.activations.theory` and :mod:`zhunt.activations.garch` measure, and writes
the tables and figures (:mod:`zhunt.report.theory`) at the rule's output paths.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from zhunt.activations import garch, theory
from zhunt.activations.paired import load_paired
from zhunt.data.numerals import store_numeral_ids
from zhunt.data.store import ActivationStore
from zhunt.errors import ZhuntError
from zhunt.io import write_table, write_text
from zhunt.report import theory as render
from zhunt.stages.paths import figure_stem

__all__ = ["THEORY_TABLES", "THEORY_FIGURES", "run_theory", "run_garch"]

log = logging.getLogger("zhunt.stages.theory")

#: Output names of rule ``theory``: tables (``[tsv, md]``, or one TSV for ``gram`` and ``coint``) ...
THEORY_TABLES = ("snr", "summary", "gram", "nn", "depth", "crossmap", "coint")
#: ... and figures (``[pdf, png]``).
THEORY_FIGURES = ("fig_snr", "fig_nn", "fig_gram", "fig_crossmap")
#: Id and value columns a generation-length table may use (the first present is taken).
_GL_ID_COLUMNS = ("problem", "prompt_id", "id")
_GL_VALUE_COLUMNS = ("gen_length", "generation_length", "n_generated", "n_new_tokens", "length")


def _read_tsv(path, what: str) -> pd.DataFrame:
    """A TSV input, or one line naming the file."""
    path = Path(path)
    try:
        return pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ZhuntError(str(path), f"cannot read {what} ({' '.join(str(exc).split())[:160]})") from None


def read_generation_lengths(path) -> pd.Series:
    """Mean generation length per problem id (str) from a TSV with an id and a length column."""
    t = _read_tsv(path, "generation lengths")
    idc = next((c for c in _GL_ID_COLUMNS if c in t.columns), None)
    valc = next((c for c in _GL_VALUE_COLUMNS if c in t.columns), None)
    if idc is None or valc is None:
        raise ZhuntError(str(path), "generation-length table needs a 'problem' or 'prompt_id' column and one "
                                    "of 'gen_length', 'generation_length', 'n_generated', 'n_new_tokens', 'length'")
    return t.groupby(t[idc].astype(str))[valc].mean()


def _write_theory(res: theory.TheoryTables, outputs, model: str, nn_threshold: float) -> None:
    """The tables and figures of :func:`run_theory` at the rule's outputs."""
    for name in THEORY_TABLES:
        paths = [outputs[name]] if isinstance(outputs[name], (str, Path)) else list(outputs[name])
        write_table(res.tables[name], paths[0], markdown=paths[1] if len(paths) > 1 else None)
    write_table(res.digit, outputs["digit"])
    R = res.R
    render.plot_snr(R.snr, R.pair, model, figure_stem(outputs["fig_snr"]))
    render.plot_nn_accuracy(R.nn[R.nn["tokens"] == "all"], R.P.langs, nn_threshold, model,
                            figure_stem(outputs["fig_nn"]))
    render.plot_contrib_gram(R.G, model, figure_stem(outputs["fig_gram"]))
    render.plot_crossmap(R.crossmap, R.P.langs, model, figure_stem(outputs["fig_crossmap"]))


def run_theory(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """SNR, contributions, NN retrieval, alignment depth, cross-maps, cointegration and the digit confound.

    ``inputs["generations"]``: Phase 0's records (the generation lengths), or empty / absent
    (``theory.generation_lengths: prompt``: the prompt token lengths stand in).
    """
    model = wildcards["model"]
    missing = [k for k in THEORY_TABLES + THEORY_FIGURES + ("digit",) if k not in outputs]
    if missing:
        raise ZhuntError("theory", f"outputs {missing} not given")
    theory.check_theory_settings(params["nn_threshold"], params["pca_dim"])
    numeral_ids = store_numeral_ids(inputs["model"], inputs["store"])
    with ActivationStore(inputs["store"]) as store:
        P = load_paired(store)
        P_nonum = load_paired(store, exclude_ids=numeral_ids)
    gens = inputs.get("generations")
    if gens is not None and not isinstance(gens, str):
        gens = list(gens)[0] if len(gens) else None
    gl = read_generation_lengths(gens) if gens else None
    res = theory.theory(P, P_nonum, generation_lengths=gl, nn_threshold=params["nn_threshold"],
                        pca_dim=params["pca_dim"], coint_components=params["coint_components"], site=params["site"],
                        layers=list(params["layers"]), model_name=model)
    _write_theory(res, outputs, model, params["nn_threshold"])
    main, R = res.R.main_snr, res.R
    log.info("%s: SNR %s %.3f -> %.3f (%d violations)", model, R.pair_name, main["SNR"].iloc[0],
             main["SNR"].iloc[-1], R.mono["violations"])


def run_garch(inputs, params, outputs, *, wildcards=None, threads=1) -> None:
    """GARCH(1,1) per problem on the per-step update differences (outputs ``table``, ``fig``)."""
    path = inputs["steps"]
    df = _read_tsv(path, "step table")
    if not set(garch.STEP_COLUMNS) <= set(df.columns):
        raise ZhuntError(str(path), f"step table needs columns {sorted(garch.STEP_COLUMNS)}, has {list(df.columns)}")
    out = garch.garch_table(df)
    model = garch.garch_model_verdict(out["verdict"])
    model_out = garch.garch_model_verdict(out["output_verdict"]) if "output_verdict" in out.columns else None
    tsv, md = list(outputs["table"])
    write_table(out, tsv)
    write_text(md, render.garch_markdown(out, model, model_out, garch.GARCH_MIN_STEPS, garch.GARCH_LEVEL))
    render.plot_garch(out, figure_stem(outputs["fig"]), garch.GARCH_LEVEL)
