"""Markdown and the figure of Phase 0 behaviour (:mod:`zhunt.experiments.behaviour`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from zhunt.experiments.behaviour import BANDS, PAIRED_ALPHA

__all__ = ["summary_markdown", "plot_accuracy"]


def summary_markdown(summary: pd.DataFrame, model_name: str, n_shots: int) -> str:
    """``summary.md``: accuracy per language, the paired comparison with English and the zh band
    (:data:`~zhunt.experiments.behaviour.BANDS`)."""
    lines = [f"# Phase 0 behaviour: {model_name}", "",
             f"Greedy generation, {n_shots}-shot; accuracy = extracted answer equals the key; "
             "95% percentile bootstrap CI over problems (2000 resamples, seed 0).", "",
             "| lang | n | correct | accuracy [95% CI] | no answer | on-language | mean CJK |",
             "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(f"| {r['lang']} | {r['n']} | {r['n_correct']} | {r['accuracy']:.3f} "
                     f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}] | {r['n_no_answer']} | "
                     f"{r['on_language_rate']:.3f} | {r['mean_cjk_fraction']:.3f} |")
    if "band" in summary:
        lines += ["", "## Paired comparison with English (same problems)", "",
                  "| lang | paired | only lang correct | only en correct | diff (lang - en) | "
                  "exact McNemar p | verdict | seed band |", "|---|---|---|---|---|---|---|---|"]
        for _, r in summary[summary["lang"] != "en"].iterrows():
            if pd.isna(r.get("band")):
                continue
            lines.append(f"| {r['lang']} | {r['n_paired']} | {r['n_only_lang']} | {r['n_only_en']} | "
                         f"{r['diff_vs_en']:+d} | {r['mcnemar_p']:.3g} | {r.get('paired_verdict', 'n/a')} | "
                         f"{r['band']} |")
        lines += ["", f"Verdict: exact McNemar p < {PAIRED_ALPHA:g} -> 'lang better' / 'en better' by the sign of "
                  "diff, else 'no difference'. Bands of diff = n_correct(lang) - n_correct(en) (seed 001 "
                  "contingency, a count that ignores the number of problems; every integer falls in exactly one):",
                  ""]
        for label, rule, action in BANDS:
            lines.append(f"- **{label.format(lang='zh')}**: {rule} — {action}")
        zh = summary[summary["lang"] == "zh"]
        if len(zh) and not pd.isna(zh.iloc[0].get("band")):
            band = zh.iloc[0]["band"]
            action = next(a for lab, _, a in BANDS if lab.format(lang="zh") == band)
            lines += ["", f"**zh vs en: {band}** (diff {zh.iloc[0]['diff_vs_en']:+d}) — {action}."]
    return "\n".join(lines) + "\n"


def plot_accuracy(summary: pd.DataFrame, stem, title: str = "") -> list:
    """Bar chart of accuracy per language with bootstrap 95% CIs (``{stem}.pdf/.png``)."""
    from zhunt.report.figures import SERIES_COLORS, new_figure, save_figure

    fig, ax = new_figure(width=max(3.0, 1.0 + 0.7 * len(summary)), height=3.0)
    x = np.arange(len(summary))
    acc = summary["accuracy"].to_numpy(float)
    err = np.vstack([acc - summary["ci_lo"].to_numpy(float), summary["ci_hi"].to_numpy(float) - acc])
    ax.bar(x, acc, color=SERIES_COLORS["attention"], width=0.6)
    ax.errorbar(x, acc, yerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_xticks(x, summary["lang"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_title(title)
    return save_figure(fig, stem)
