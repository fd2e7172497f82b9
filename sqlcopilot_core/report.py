"""Sweep reports: the comparison table and the accuracy-vs-parameters plot a researcher reads in MLflow.

    python -c "from sqlcopilot_core.report import sweep_markdown; print(sweep_markdown([]))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = ("ratio", "params", "pruned_ex", "distilled_ex", "retention", "tokens_per_s", "size_mb")


def sweep_rows(teacher: dict[str, Any], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ratio: parameters kept, ex after pruning and after distillation, retention vs the teacher."""
    rows = []
    for result in sorted(results, key=lambda r: -r["ratio"]):
        pruned, distilled = result["pruned"], result["distilled"]
        teacher_ex = teacher.get("ex") or 0.0
        rows.append({"ratio": result["ratio"], "params": int(distilled.get("params", pruned.get("params", 0))),
                     "params_kept": distilled.get("params", 0) / max(teacher.get("params", 1), 1),
                     "pruned_ex": pruned.get("ex"), "distilled_ex": distilled.get("ex"),
                     "retention": (distilled.get("ex", 0.0) / teacher_ex) if teacher_ex else None,
                     "tokens_per_s": distilled.get("tokens_per_s"), "size_mb": distilled.get("size_mb")})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def sweep_markdown(rows: list[dict[str, Any]], teacher: dict[str, Any] | None = None) -> str:
    """A markdown table of the sweep, the teacher first."""
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    lines = []
    if teacher:
        lines.append("| teacher (1.0) | " + " | ".join(_cell(teacher.get(k)) for k in
                     ("params", "ex", "ex", None, "tokens_per_s", "size_mb")) + " |")
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in COLUMNS) + " |" for row in rows]
    return header + "\n".join(lines) + "\n"


def sweep_plot(rows: list[dict[str, Any]], teacher: dict[str, Any], path: Path) -> Path:
    """Execution accuracy vs parameters kept, pruned and distilled, each point annotated with its tokens/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    kept = [row["params_kept"] for row in rows]
    axes.plot(kept, [row["pruned_ex"] or 0 for row in rows], "o--", label="pruned only")
    axes.plot(kept, [row["distilled_ex"] or 0 for row in rows], "o-", label="pruned + distilled")
    if teacher:
        axes.axhline(teacher.get("ex") or 0, color="gray", linestyle=":", label="fine-tuned teacher")
    for row, x in zip(rows, kept):
        if row.get("tokens_per_s"):
            axes.annotate(f"{row['tokens_per_s']:.0f} tok/s", (x, row["distilled_ex"] or 0),
                          textcoords="offset points", xytext=(4, 6), fontsize=8)
    axes.set_xlabel("parameters kept (fraction of the teacher)")
    axes.set_ylabel("execution accuracy (dev)")
    axes.set_title("Which ratio should we ship?")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
