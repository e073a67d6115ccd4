"""The words and pictures of a run: labels, tables, plots and the Markdown report that links them.

The library behind ``search.inspect`` (which writes the report) and ``search.rerank`` (which adds its own
section). A section another command wrote is kept beside the run as its own Markdown file
(``RUN_DIR/rerank.md``), so that rewriting the report later keeps it.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .journal import CandidateRow
from .leaderboard import Entry
from .plots import pareto_info, plot_graph, plot_pareto, plot_progress, progress_info
from .results import RunView
from .state import objectives
from .states import State

__all__ = ["table", "format_table", "label", "write_plots", "existing_plots", "saved_sections", "write_report",
           "write_csv", "RERANK_FILE"]

# Written by ``search.rerank``; the report embeds it as its own section.
RERANK_FILE = "rerank.md"


def _fitness_cells(entry: Entry, archs: Sequence[str]) -> list[str]:
    fitness = entry.row.fitness or {}
    return [f"{fitness[a]:.3f}" if a in fitness else "-" for a in archs]


def label(row: CandidateRow) -> str:
    """The formula, with references marked by name."""
    if row.is_reference:
        return f"[reference {row.name}] {row.formula or ''}".strip()
    return row.formula or row.name or "-"


def table(entries: Sequence[Entry], archs: Sequence[str], markdown: bool = False,
          stages: Optional[Mapping[int, int]] = None) -> str:
    """The top candidates as a text (or Markdown) table; with ``stages`` (a run with hurdles: candidate id
    -> stages trained), a column of the stage each reached; when the entries carry a cost (a run with the cost
    objective), a column of it, relative to BN-ReLU."""
    cost = any(e.cost is not None for e in entries)
    head = ["rank", "front", "id", *(["stage"] if stages else []), "hash", *archs, "mean", *(["cost"] if cost else []),
            "batch", "parent", "found", "formula"]
    rows = []
    for e in entries:
        r = e.row
        rows.append([str(e.rank), str(e.pareto_rank), str(r.id), *([str(stages.get(r.id, 1))] if stages else []),
                     r.structural_hash or "-",
                     *_fitness_cells(e, archs), f"{r.mean_fitness:.3f}", *([f"{e.cost:.2f}"] if cost else []),
                     {True: "yes", False: "no", None: "-"}[r.batch_dependent],
                     str(r.parent_id) if r.parent_id is not None else "-", str(e.found), label(r)])
    return format_table(head, rows, markdown)


def format_table(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """Cells as aligned text columns, or as a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), *(fmt(row) for row in rows)])


def _archs(view: RunView) -> list[str]:
    return list(view.config["model"]["archs"])


def write_plots(view: RunView, entries: Sequence[Entry], compare: Sequence[RunView] = (),
                pareto_archs: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the pictures into ``RUN_DIR/plots/``; returns name -> path."""
    out = view.run_dir / "plots"
    out.mkdir(exist_ok=True)
    rows = view.candidates()
    runs = [view, *compare]
    curves = [progress_info(v.candidates(), v.config, f"{v.config['search']['algorithm']} ({v.run_dir.name})")
              for v in runs]
    references = {name: r.mean_fitness for name, r in view.references().items() if r.status is State.OK}
    paths = {"progress": plot_progress(curves, out / "progress.png", references=references)}
    archs = list(pareto_archs or _archs(view)[:2])
    if len(archs) == 2:
        info = pareto_info(rows, view.population(), archs)
        paths["pareto"] = plot_pareto(info, out / "pareto.png")
    for e in entries:
        graph = e.row.graph
        if graph is not None:
            title = f"#{e.rank} (id {e.row.id}, mean {e.row.mean_fitness:.3f}): {graph.formula()}"
            paths[f"graph_{e.rank}"] = plot_graph(graph, out / f"graph_{e.rank}.png", title)
    return paths


def existing_plots(run_dir: Path, top: int) -> dict[str, Path]:
    """The pictures an earlier ``--plots`` left in ``RUN_DIR/plots/``, to rewrite the report without redrawing."""
    names = ["progress", "pareto", *(f"graph_{k}" for k in range(1, top + 1))]
    paths = {name: run_dir / "plots" / f"{name}.png" for name in names}
    return {name: path for name, path in paths.items() if path.is_file()}


def saved_sections(run_dir: Path) -> list[str]:
    """The sections other commands saved beside the run (the re-ranking's), for ``write_report``."""
    path = run_dir / RERANK_FILE
    return [path.read_text()] if path.is_file() else []


def write_report(view: RunView, entries: Sequence[Entry], plots: dict[str, Path],
                 sections: Sequence[str] = ()) -> Path:
    """``RUN_DIR/report.md``: the summary, the table and the pictures, readable on GitHub; then each of
    ``sections`` (Markdown, each starting with its own heading)."""
    summary = view.summary()
    refs = view.references()
    lines = [f"# Search report: {view.run_dir.name}", "",
             f"Algorithm `{view.config['search']['algorithm']}`, seed {view.config['seed']}, "
             f"architectures {', '.join(_archs(view))}.", ""]
    lines += [f"- {line}" for line in summary.lines()]
    if refs:
        ranked = view.places()
        lines += ["", "## References", "", "| reference | status | " + " | ".join(_archs(view)) + " | mean | rank |",
                  "|---|---|" + "---|" * (len(_archs(view)) + 2)]
        for name, r in sorted(refs.items()):
            cells = [f"{(r.fitness or {}).get(a, float('nan')):.3f}" for a in _archs(view)]
            mean = f"{r.mean_fitness:.3f}" if r.fitness else "-"
            status = f"{r.status} ({r.reason})" if r.reason else r.status
            lines.append(f"| {name} | {status} | " + " | ".join(cells) + f" | {mean} | {ranked.get(r.id, '-')} |")
    over = " over accuracy and cost" if "cost" in objectives(view.config) else ""
    lines += ["", f"## Top {len(entries)} (Pareto rank{over}, then mean validation accuracy)", "",
              table(entries, _archs(view), markdown=True, stages=view.stages_reached()), ""]
    for key, title in (("progress", "Search progress"), ("pareto", "Pareto front of the final population")):
        if key in plots:
            lines += [f"## {title}", "", f"![{title}](plots/{plots[key].name})", ""]
    graphs = [(k, p) for k, p in plots.items() if k.startswith("graph_")]
    if graphs:
        lines += ["## Top graphs", ""]
        lines += [f"![{k}](plots/{p.name})" for k, p in graphs] + [""]
    for section in sections:
        lines += [section.rstrip(), ""]
    path = view.run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
              fields: Optional[Sequence[str]] = None) -> Path:
    """``rows`` as a CSV file with a header (``fields``, else every key in first-seen order), its folder made
    if needed; written beside and renamed, so a reader never sees half a table. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields or dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
