"""See what a search found: ``python -m search.inspect RUN_DIR [--top K] [--json] [--plots]``.

Prints the run summary and a table of the top candidates (Pareto rank, then mean accuracy); ``--json`` prints
the same as JSON; ``--plots`` writes PNG pictures under ``RUN_DIR/plots/`` and a ``RUN_DIR/report.md`` that
links them (and the re-ranking section, when ``search.rerank`` has written ``RUN_DIR/rerank.md``). The journal
is opened read-only, so this works on a run that is still going or was interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .journal import CandidateRow, JournalError
from .leaderboard import Entry, leaderboard, places
from .plots import pareto_info, plot_graph, plot_pareto, plot_progress, progress_info
from .results import RunView, open_run
from .states import State

__all__ = ["table", "format_table", "label", "write_plots", "existing_plots", "write_report", "RERANK_FILE", "main"]

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


def table(entries: Sequence[Entry], archs: Sequence[str], markdown: bool = False) -> str:
    """The top candidates as a text (or Markdown) table."""
    head = ["rank", "front", "id", "hash", *archs, "mean", "batch", "parent", "found", "formula"]
    rows = []
    for e in entries:
        r = e.row
        rows.append([str(e.rank), str(e.pareto_rank), str(r.id), r.structural_hash or "-",
                     *_fitness_cells(e, archs), f"{r.mean_fitness:.3f}",
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


def write_report(view: RunView, entries: Sequence[Entry], plots: dict[str, Path]) -> Path:
    """``RUN_DIR/report.md``: the summary, the table and the pictures, readable on GitHub; then the
    re-ranking section, when ``RUN_DIR/rerank.md`` exists."""
    summary = view.summary()
    refs = view.references()
    lines = [f"# Search report: {view.run_dir.name}", "",
             f"Algorithm `{view.config['search']['algorithm']}`, seed {view.config['seed']}, "
             f"architectures {', '.join(_archs(view))}.", ""]
    lines += [f"- {line}" for line in summary.lines()]
    if refs:
        ranked = places(view.candidates())
        lines += ["", "## References", "", "| reference | status | " + " | ".join(_archs(view)) + " | mean | rank |",
                  "|---|---|" + "---|" * (len(_archs(view)) + 2)]
        for name, r in sorted(refs.items()):
            cells = [f"{(r.fitness or {}).get(a, float('nan')):.3f}" for a in _archs(view)]
            mean = f"{r.mean_fitness:.3f}" if r.fitness else "-"
            status = f"{r.status} ({r.reason})" if r.reason else r.status
            lines.append(f"| {name} | {status} | " + " | ".join(cells) + f" | {mean} | {ranked.get(r.id, '-')} |")
    lines += ["", f"## Top {len(entries)} (Pareto rank, then mean validation accuracy)", "",
              table(entries, _archs(view), markdown=True), ""]
    for key, title in (("progress", "Search progress"), ("pareto", "Pareto front of the final population")):
        if key in plots:
            lines += [f"## {title}", "", f"![{title}](plots/{plots[key].name})", ""]
    graphs = [(k, p) for k, p in plots.items() if k.startswith("graph_")]
    if graphs:
        lines += ["## Top graphs", ""]
        lines += [f"![{k}](plots/{p.name})" for k, p in graphs] + [""]
    rerank = view.run_dir / RERANK_FILE
    if rerank.is_file():
        lines += [rerank.read_text().rstrip(), ""]
    path = view.run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m search.inspect", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run directory (holding search.sqlite and config.yaml)")
    p.add_argument("--top", type=int, default=10, help="how many candidates to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the summary and the top candidates as JSON")
    p.add_argument("--plots", action="store_true", help="write RUN_DIR/plots/*.png and RUN_DIR/report.md")
    p.add_argument("--compare", nargs="*", default=[], metavar="RUN_DIR",
                   help="other runs (e.g. random search) drawn beside this one in the progress plot")
    p.add_argument("--archs", nargs=2, metavar="ARCH", help="the two architectures of the Pareto plot")
    args = p.parse_args(argv)
    try:
        view = open_run(args.run_dir)
        compare = [open_run(d) for d in args.compare]
    except (JournalError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    entries = leaderboard(view.candidates(), top=args.top)
    summary = view.summary()
    if args.json:
        print(json.dumps({"run_dir": str(view.run_dir), "summary": summary.__dict__
                          | {"dedup_hit_rate": summary.dedup_hit_rate,
                             "evaluations_per_hour": summary.evaluations_per_hour},
                          "top": [e.as_dict() for e in entries]}, indent=2))
    else:
        print(f"run {view.run_dir} ({view.config['search']['algorithm']})")
        for line in summary.lines():
            print(f"  {line}")
        print()
        print(table(entries, _archs(view)))
    if args.plots:
        plots = write_plots(view, entries, compare, args.archs)
        report = write_report(view, entries, plots)
        print(f"wrote {report} and {len(plots)} pictures in {view.run_dir / 'plots'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
