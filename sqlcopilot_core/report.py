"""Sweep reports: the comparison table (the parent run's description), the per-ratio metrics a researcher charts in
MLflow, and the accuracy-vs-size Pareto plot.

    python -c "from sqlcopilot_core.report import sweep_markdown; print(sweep_markdown([]))"
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

COLUMNS = ("ratio", "params", "params_kept", "size_mb", "pruned_ex", "distilled_ex", "retention",
           "retention_vs_control", "tokens_per_s", "cpp_tokens_per_s")
# MLflow shows a run's description from this tag
DESCRIPTION_TAG = "mlflow.note.content"
# per-ratio figures logged on the sweep's parent run, at step = parameters kept, so MLflow charts them against it
PARENT_METRICS = {"sweep_ex": "distilled_ex", "sweep_pruned_ex": "pruned_ex", "sweep_retention": "retention",
                  "sweep_retention_vs_control": "retention_vs_control", "sweep_size_mb": "size_mb",
                  "sweep_tokens_per_s": "tokens_per_s", "sweep_cpp_tokens_per_s": "cpp_tokens_per_s",
                  "sweep_params_kept": "params_kept", "sweep_ratio": "ratio"}


def _fraction(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return value / reference


def retention(ex: float, reference_ex: float) -> float:
    """ex as a fraction of a reference model's ex; 1.0 when the reference scores 0 (nothing left to lose)."""
    return ex / reference_ex if reference_ex > 0 else 1.0


def _retention(ex: float | None, reference_ex: float | None) -> float | None:
    return None if ex is None or reference_ex is None else retention(ex, reference_ex)


def sweep_rows(teacher: dict[str, Any], results: list[dict[str, Any]],
               control: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per ratio: parameters kept, size, ex after pruning and after distillation, retention vs the teacher
    and vs the control (the teacher trained on for the same budget), Python and (when measured) C++ tokens/s."""
    rows = []
    control_ex = (control or {}).get("ex")
    for result in sorted(results, key=lambda r: -r["ratio"]):
        pruned, distilled = result["pruned"], result["distilled"]
        rows.append({"ratio": result["ratio"], "prune_hidden": result.get("prune_hidden", False),
                     "params": int(distilled.get("params", pruned.get("params", 0))),
                     "params_kept": distilled.get("params", 0) / max(teacher.get("params", 1), 1),
                     "size_mb": distilled.get("size_mb"), "pruned_ex": pruned.get("ex"),
                     "distilled_ex": distilled.get("ex"),
                     "retention": _retention(distilled.get("ex"), teacher.get("ex")),
                     "retention_vs_control": _retention(distilled.get("ex"), control_ex),
                     "tokens_per_s": distilled.get("tokens_per_s"),
                     "cpp_tokens_per_s": distilled.get("cpp_tokens_per_s")})
    return rows


def reference_rows(teacher: dict[str, Any], control: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The teacher and the control as table rows (ratio shown as their name)."""
    rows = [{"ratio": "teacher", "params": teacher.get("params"), "params_kept": 1.0,
             "size_mb": teacher.get("size_mb"), "distilled_ex": teacher.get("ex"), "retention": 1.0,
             "tokens_per_s": teacher.get("tokens_per_s")}]
    if control is not None:
        rows.append({"ratio": "control (teacher + distill budget, unpruned)", "params": control.get("params"),
                     "params_kept": _fraction(control.get("params"), teacher.get("params")),
                     "size_mb": control.get("size_mb"), "distilled_ex": control.get("ex"),
                     "retention": _retention(control.get("ex"), teacher.get("ex")), "retention_vs_control": 1.0,
                     "tokens_per_s": control.get("tokens_per_s")})
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def sweep_markdown(rows: list[dict[str, Any]], teacher: dict[str, Any] | None = None,
                   control: dict[str, Any] | None = None) -> str:
    """A markdown table of the sweep: the teacher and the control first, then every ratio (an 'h' marks a ratio
    that also pruned the hidden width); ex is the distilled student's, retention its ex over the teacher's and over
    the control's."""
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    shown = reference_rows(teacher, control) if teacher else []
    shown += [{**row, "ratio": f"{row['ratio']}{' h' if row.get('prune_hidden') else ''}"} for row in rows]
    lines = ["| " + " | ".join(_cell(row.get(k)) for k in COLUMNS) + " |" for row in shown]
    return header + "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (smaller or equal size and higher ex, or smaller and equal ex),
    in order of size."""
    front = []
    for i, (size, ex) in enumerate(points):
        beaten = any((s <= size and e > ex) or (s < size and e >= ex) for j, (s, e) in enumerate(points) if j != i)
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def sweep_plot(rows: list[dict[str, Any]], teacher: dict[str, Any], path: Path,
               control: dict[str, Any] | None = None) -> Path:
    """Execution accuracy vs size in MB: the distilled students (pruned-only beside them), the teacher and the
    control, each annotated with its tokens/s (C++ when measured), the Pareto front drawn through them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    named = [(f"{row['ratio']}", row.get("size_mb") or 0.0, row.get("distilled_ex") or 0.0,
              row.get("cpp_tokens_per_s") or row.get("tokens_per_s"), "C++ " if row.get("cpp_tokens_per_s") else "")
             for row in rows]
    axes.plot([n[1] for n in named], [row.get("pruned_ex") or 0.0 for row in rows], "x", color="tab:gray",
              label="pruned only")
    axes.plot([n[1] for n in named], [n[2] for n in named], "o", color="tab:blue", label="pruned + distilled")
    for label, metrics, marker in (("teacher", teacher, "s"), ("control", control, "D")):
        if metrics:
            named.append((label, metrics.get("size_mb") or 0.0, metrics.get("ex") or 0.0,
                          metrics.get("tokens_per_s"), ""))
            axes.plot([named[-1][1]], [named[-1][2]], marker, label=label)
    front = pareto_front([(n[1], n[2]) for n in named])
    axes.plot([named[i][1] for i in front], [named[i][2] for i in front], "-", color="tab:green", alpha=0.6,
              label="Pareto front")
    for label, size, ex, speed, runtime in named:
        text = label + (f"\n{speed:.0f} {runtime}tok/s" if speed else "")
        axes.annotate(text, (size, ex), textcoords="offset points", xytext=(4, 6), fontsize=7)
    axes.set_xlabel("size on disk (MB)")
    axes.set_ylabel("execution accuracy (dev)")
    axes.set_title("Which ratio should we ship? (accuracy vs size, tokens/s annotated)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def parent_metrics(rows: list[dict[str, Any]], teacher: dict[str, Any], control: dict[str, Any] | None
                   ) -> list[tuple[dict[str, float], int]]:
    """(metrics, step) pairs for the parent run: every ratio's figures at step = its parameter count, and the
    teacher's and control's ex (teacher_ex, control_ex) as plain figures."""
    logged = [({name: row.get(column) for name, column in PARENT_METRICS.items()}, int(row["params"]))
              for row in rows]
    references = {"teacher_ex": teacher.get("ex"), "teacher_params": teacher.get("params"),
                  "teacher_size_mb": teacher.get("size_mb")}
    if control is not None:
        references.update(control_ex=control.get("ex"), control_retention=_retention(control.get("ex"),
                                                                                     teacher.get("ex")))
    return logged + [(references, 0)]


def publish_sweep(run_id: str, teacher: dict[str, Any], results: list[dict[str, Any]],
                  control: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """On the sweep's parent run: the comparison table as its description, the per-ratio figures as metrics (step =
    parameters kept), and sweep.md, sweep.json and the Pareto plot sweep.png as artifacts. Returns the rows."""
    from sqlcopilot_core import tracking

    control_metrics = control["metrics"] if control else None
    rows = sweep_rows(teacher, results, control_metrics)
    markdown = sweep_markdown(rows, teacher, control_metrics)
    tracking.set_tags(run_id, {DESCRIPTION_TAG: "## prune sweep\n\n" + markdown})
    for metrics, step in parent_metrics(rows, teacher, control_metrics):
        tracking.log_metrics(run_id, metrics, step)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        (out / "sweep.md").write_text(markdown)
        (out / "sweep.json").write_text(json.dumps({"teacher": teacher, "control": control, "rows": rows,
                                                    "results": results}, indent=1, default=str))
        sweep_plot(rows, teacher, out / "sweep.png", control_metrics)
        for name in ("sweep.md", "sweep.json", "sweep.png"):
            tracking.log_artifact(run_id, str(out / name), "sweep")
    return rows
