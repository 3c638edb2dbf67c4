"""Exp. A, the seed's per-configuration grid (rule ``patching``): its Markdown tables, metrics and verdict.

The science is :mod:`zhunt.experiments.patching` (records, :func:`~zhunt.experiments.patching.config_metrics`,
:func:`~zhunt.experiments.patching.donor_metrics`, the verdicts); the stage
:func:`zhunt.stages.patching.run_patching` writes what these functions render.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from zhunt.experiments.patching import (VERDICTS, _arrow, donor_verdict_caption, overall_verdict, parse_direction,
                                        verdict_caption)

__all__ = ["patch_table", "config_table_markdown", "metrics_markdown", "verdict_markdown"]


def _short(text, n: int = 60) -> str:
    s = "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)
    s = s.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t").replace("|", "\\|")
    return s if len(s) <= n else s[:n - 1] + "…"


def patch_table(records: pd.DataFrame, direction: str, width: int = 60) -> tuple[pd.DataFrame, str]:
    """Seed 000's "done" table of one configuration.

    Returns
    -------
    table : pandas.DataFrame
        ``Problem`` | ``Original output (t)`` | ``Z-patched (t←s)`` |
        ``Z⊥-patched (t←s)`` | ``Full-patched`` with the whole generated texts,
        plus the extracted answers (``answer: ...`` columns) and the key.
    markdown : str
        The five seed columns, texts shortened to ``width`` characters with
        newlines, tabs and pipes escaped.
    """
    t, _ = parse_direction(direction)
    arr = _arrow(direction)
    cols = {"none": f"Original output ({t})", "z": f"Z-patched ({arr})", "zperp": f"Z⊥-patched ({arr})",
            "full": "Full-patched"}
    base = records[records["condition"] == "none"]
    problems = list(dict.fromkeys(base["problem"]))
    data = {"Problem": problems}
    for cond, title in cols.items():
        c = records[records["condition"] == cond].set_index("problem").reindex(problems)
        data[title] = c["text"].tolist()
    for cond in cols:
        c = records[records["condition"] == cond].set_index("problem").reindex(problems)
        data[f"answer: {cond}"] = pd.array(c["extracted"].tolist(), dtype="Int64")
    key = base.set_index("problem").reindex(problems)
    data["key"] = key["answer"].tolist()
    donor = "donor" in key.columns and (key["donor"].astype(str) != pd.Series(problems, index=key.index)).any()
    if donor:  # the donor design: which problem (and answer) was patched in
        data["donor"] = key["donor"].tolist()
        data["donor answer"] = key["donor_answer"].tolist()
    table = pd.DataFrame(data)
    head = ["Problem", *(["Donor (answer)"] if donor else []), *cols.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        first = [_short(r["Problem"], width)]
        if donor:
            first.append(_short(f"{r['donor']} ({r['donor answer']})", width))
        lines.append("| " + " | ".join(first + [_short(r[c], width) for c in cols.values()]) + " |")
    return table, "\n".join(lines) + "\n"


def _fmt_rate(m: Mapping, name: str) -> str:
    v = m.get(name, float("nan"))
    if v is None or not np.isfinite(v):
        return "—"
    return f"{v:.2f} [{m[name + '_lo']:.2f}, {m[name + '_hi']:.2f}]"


def _rates_markdown(metrics: pd.DataFrame, title: str, intro: str, cols, p_col: str, p_label: str) -> str:
    """One row per configuration: the rates ``cols`` ([(header, column)]) with CIs, a McNemar p, the verdict."""
    lines = [f"# {title}", "", intro, "",
             "| layer | k | alignment | direction | N | " + " | ".join(c for c, _ in cols)
             + f" | {p_label} | verdict |",
             "|" + "---|" * (7 + len(cols))]
    for _, r in metrics.iterrows():
        m = r.to_dict()
        lines.append(f"| {m['layer']} | {m['k']} | {m['alignment']} | {m['direction']} | {m['n_problems']} | "
                     + " | ".join(_fmt_rate(m, n) for _, n in cols)
                     + f" | {m[p_col]:.3g} | {m['verdict']} |")
    return "\n".join(lines) + "\n"


def _donor_metrics_markdown(metrics: pd.DataFrame, title: str) -> str:
    cols = [("Z transfer", "z_transfer"), ("Z⊥ transfer", "zperp_transfer"), ("full transfer", "full_transfer"),
            ("random transfer", "random_transfer"), ("Z kept", "z_kept"), ("Z⊥ kept", "zperp_kept"),
            ("Z lang. preserved", "z_language_preservation"), ("Z⊥ lang. disrupted", "zperp_language_disruption"),
            ("Z lang. disrupted", "z_language_disruption")]
    return _rates_markdown(metrics, title, "Donor design (source = a different problem with a different answer). "
                           "Rates with 95% bootstrap CIs over problems.", cols,
                           "mcnemar_transfer_p", "McNemar p (transfer)")


def _metrics_markdown(metrics: pd.DataFrame, title: str) -> str:
    cols = [("Z ans. change", "z_answer_change"), ("Z⊥ ans. change", "zperp_answer_change"),
            ("random ans. change", "random_answer_change"), ("Z lang. preserved", "z_language_preservation"),
            ("Z⊥ lang. disrupted", "zperp_language_disruption"), ("full agrees Z", "full_agree_z"),
            ("full agrees Z⊥", "full_agree_zperp")]
    return _rates_markdown(metrics, title, "Rates with 95% bootstrap CIs over problems.", cols,
                           "mcnemar_answer_p", "McNemar p (ans.)")


def config_table_markdown(md: str, model_name: str, cfg: Mapping, verdict: str, note: str) -> str:
    """The Markdown file of one configuration's table (:func:`patch_table`'s ``markdown``) with its verdict."""
    donor = cfg["source"] != "same"
    return (f"# Patching table: {model_name} L{cfg['layer']} k={cfg['k']} {cfg['alignment']} "
            f"{_arrow(cfg['direction'])}{' (' + cfg['source'] + ' source)' if donor else ''}\n\n{md}\n"
            f"Verdict: **{verdict}** ({note})\n")


def metrics_markdown(metrics: pd.DataFrame, sources: Sequence[str], model_name: str) -> str:
    """``metrics.md``: one table per source (the seed design's rates, then the donor design's)."""
    parts = []
    for source in sources:
        ms = metrics[metrics["source"] == source].dropna(axis=1, how="all")
        if source == "same":
            parts.append(_metrics_markdown(ms, f"Patching metrics: {model_name}"))
        else:
            parts.append(_donor_metrics_markdown(ms, f"Patching metrics ({source} source): {model_name}"))
    return "\n".join(parts)


def _seed_lines(primary: Mapping, strongest: str, counts: Mapping, n: int, where: str, arrow: str,
                several: bool) -> list[str]:
    lines = (["## Seed design (source = the same problem)", ""] if several else []) + [
        f"**Headline, the pre-registered primary configuration ({where}): {primary['verdict']}** "
        f"({primary['criteria']}).", "",
        f"The seed's rule, the strongest verdict over the {n} configurations of {arrow} (not corrected for their "
        f"number): {strongest} — " + ", ".join(f"{counts.get(v, 0)} × {v}" for v in VERDICTS if counts.get(v, 0))
        + ".", "",
        f"Z-patching changes answers {_fmt_rate(primary, 'z_answer_change')} of the time while "
        f"preserving language {_fmt_rate(primary, 'z_language_preservation')}, vs Z⊥-patching which "
        f"changes answers {_fmt_rate(primary, 'zperp_answer_change')} and disrupts language "
        f"{_fmt_rate(primary, 'zperp_language_disruption')}; random k-subspaces change answers "
        f"{_fmt_rate(primary, 'random_answer_change')}; the full patch agrees with Z "
        f"{_fmt_rate(primary, 'full_agree_z')} and with Z⊥ {_fmt_rate(primary, 'full_agree_zperp')}."]
    if several:
        lines += ["", "Caveat: the source is the same problem, so an answer change measures disruption, "
                  "not a transfer of the problem; see the donor design below (docs/patching.md)."]
    return lines


def _donor_lines(primary: Mapping, strongest: str, counts: Mapping, n: int, where: str, arrow: str,
                 source: str) -> list[str]:
    return [f"## Corrected design (source = a different problem, {source})", "",
            f"**Headline donor verdict, the pre-registered primary configuration ({where}): "
            f"{primary['verdict']}** ({primary['criteria']}).", "",
            f"Strongest over the {n} configurations of {arrow} (not corrected for their number): {strongest} — "
            + ", ".join(f"{counts.get(v, 0)} × {v}" for v in VERDICTS if counts.get(v, 0)) + ".", "",
            f"The answer moves to the donor's answer under Z-patching {_fmt_rate(primary, 'z_transfer')}, "
            f"Z⊥-patching {_fmt_rate(primary, 'zperp_transfer')}, full patching "
            f"{_fmt_rate(primary, 'full_transfer')} and random k-subspaces "
            f"{_fmt_rate(primary, 'random_transfer')} (unpatched: {_fmt_rate(primary, 'none_transfer')}); "
            f"the own answer is kept {_fmt_rate(primary, 'z_kept')} (Z), {_fmt_rate(primary, 'zperp_kept')} "
            f"(Z⊥), {_fmt_rate(primary, 'random_kept')} (random); Z preserves language "
            f"{_fmt_rate(primary, 'z_language_preservation')}, Z⊥ disrupts it "
            f"{_fmt_rate(primary, 'zperp_language_disruption')}; McNemar p (Z vs Z⊥ transfer) = "
            f"{primary['mcnemar_transfer_p']:.3g}."]


def verdict_markdown(metrics: pd.DataFrame, grid: Mapping, model_name: str) -> tuple[str, dict]:
    """``verdict.md`` of the grid and, per source, its overall verdict and primary configuration.

    The primary configuration is the row with ``primary`` true (the first layer, the largest k, the
    first alignment and the first direction: :func:`zhunt.experiments.patching.grid_configs`). Its
    verdict is the headline (``overall``: pre-registered, one test, calibrated); the seed's own rule,
    :func:`zhunt.experiments.patching.overall_verdict` (the strongest verdict over the configurations
    of its direction, not corrected for their number: a null input reads positive in 7 % of seeds at
    8 configurations, BENCHMARKS.md section 9), is reported beside it as ``strongest``.

    Returns
    -------
    text : str
    by_source : dict
        ``source -> {"overall", "strongest", "primary"}`` (``primary``: its metrics row as a dict).
    """
    layers, sources = grid["layers"], grid["sources"]
    lines = [f"# Experiment A verdict: {model_name}", "",
             "Exploratory: the seed's designs as written. The causal test is the interchange design "
             "(`interchange_verdict.md`, `subspaces.tsv`; docs/patching.md).", ""]
    by_source = {}
    for source in sources:
        ms = metrics[metrics["source"] == source]
        primary = ms[ms["primary"]].iloc[0].to_dict()
        primary_dir = primary["direction"]
        prim = ms[ms["direction"] == primary_dir]
        overall, strongest = primary["verdict"], overall_verdict(prim["verdict"])
        by_source[source] = {"overall": overall, "strongest": strongest, "primary": primary}
        counts = prim["verdict"].value_counts().to_dict()
        where = f"L{primary['layer']}, k={primary['k']}, {primary['alignment']}, {_arrow(primary_dir)}"
        lines += (_seed_lines(primary, strongest, counts, len(prim), where, _arrow(primary_dir), len(sources) > 1)
                  if source == "same" else
                  _donor_lines(primary, strongest, counts, len(prim), where, _arrow(primary_dir), source))
        lines += ["", "| layer | k | alignment | direction | verdict | criteria |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['layer']} | {r['k']} | {r['alignment']} | {r['direction']} | {r['verdict']} | "
                  f"{r['criteria']} |" for _, r in ms.iterrows()]
        if len(layers) > 1:
            by_layer = {lay: overall_verdict(prim[prim["layer"] == lay]["verdict"]) for lay in layers}
            lines += ["", "Per layer (primary direction, strongest over its configurations): "
                      + ", ".join(f"L{lay}: {v}" for lay, v in by_layer.items())
                      + (" — holds at every layer." if len(set(by_layer.values())) == 1 else " — layers differ.")]
        lines += ["", verdict_caption() if source == "same" else donor_verdict_caption(), ""]
    return "\n".join(lines), by_source
