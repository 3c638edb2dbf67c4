"""The organism's training report: loss-curve and accuracy tables, Markdown summary and loss figure.

Rendered from the report dict :func:`zhunt.models.organism.train_organism` returns; the stage
(:func:`zhunt.stages.models.run_train_organism`) writes them.
"""

from __future__ import annotations

import json

import pandas as pd

from zhunt.io import atomic_path

__all__ = ["loss_curve_table", "accuracy_table", "training_report_markdown", "training_loss_figure"]


def loss_curve_table(report: dict) -> pd.DataFrame:
    """The training loss curve, columns ``step``, ``loss`` (one row per logged step)."""
    return pd.DataFrame(report["loss_curve"], columns=["step", "loss"])


def accuracy_table(report: dict) -> pd.DataFrame:
    """Held-out exact match, columns ``lang``, ``op`` and ``exact_match``: per language over every
    operation (``op = all``), then per language and operation when measured."""
    rows = [{"lang": lang, "op": "all", "exact_match": float(acc)} for lang, acc in report["accuracy"].items()]
    for lang, by_op in (report.get("accuracy_by_op") or {}).items():
        rows += [{"lang": lang, "op": op, "exact_match": float(by_op[op])} for op in sorted(by_op)]
    return pd.DataFrame(rows, columns=["lang", "op", "exact_match"])


def _accuracy_lines(report: dict) -> list[str]:
    """Held-out exact match per language, then per language x operation when measured."""
    lines = ["| language | held-out exact match |", "|---|---|"]
    lines += [f"| {lang} | {acc:.1%} |" for lang, acc in report["accuracy"].items()]
    by_op = report.get("accuracy_by_op") or {}
    if by_op:
        ops = sorted({op for d in by_op.values() for op in d})
        lines += ["", "| language | " + " | ".join(ops) + " |", "|---" * (len(ops) + 1) + "|"]
        for lang, d in by_op.items():
            lines.append(f"| {lang} | " + " | ".join(f"{d.get(op, float('nan')):.1%}" for op in ops) + " |")
    return lines


def training_report_markdown(report: dict) -> str:
    """Markdown summary of a training report: accuracy tables, wall time, final loss,
    hyper-parameters and held-out examples."""
    lines = ["# Model organism: training report", "", *_accuracy_lines(report)]
    lines += ["", f"Wall time: {report['wall_time_s']:.1f} s"
              + (f" (training {report['train_time_s']:.1f} s)" if "train_time_s" in report else "")]
    if len(report["loss_curve"]):
        lines.append(f"Final training loss: {report['loss_curve'][-1][1]:.4g} at step {report['loss_curve'][-1][0]}")
    lines += ["", "## Hyper-parameters", "", "| parameter | value |", "|---|---|"]
    for k, v in report.get("training", {}).items():
        lines.append(f"| {k} | {json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v} |")
    ex = report.get("examples") or []
    if ex:
        lines += ["", "## Examples (held out)", "", "| lang | prompt | expected | output |", "|---|---|---|---|"]
        for lang, prompt, want, got in ex:
            lines.append(f"| {lang} | {prompt} | {want} | {got} |")
    return "\n".join(lines) + "\n"


def training_loss_figure(report: dict, png_path) -> None:
    """The loss curve (log scale when every loss is > 0) titled with the held-out accuracy,
    written atomically as a PNG at ``png_path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = loss_curve_table(report)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    if len(curve):
        ax.plot(curve["step"], curve["loss"], marker=".", lw=1)
        if (curve["loss"] > 0).all():
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (answer tokens)")
    acc = ", ".join(f"{k} {v:.1%}" for k, v in report["accuracy"].items())
    ax.set_title(f"organism; held-out exact match: {acc}", fontsize=9)
    fig.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=150)
    plt.close(fig)
