"""Pictures of a run: search progress, the final population's Pareto front, the top graphs, and the re-ranking.

Each picture is split in two, as in optuna's visualisation: a pure ``*_info`` function that extracts what
to draw from the journal (tested without drawing) and a ``plot_*`` function that draws it with matplotlib
into a PNG file.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from primitives import INPUTS, LayerGraph  # noqa: E402

from .evolution import pareto_front  # noqa: E402
from .journal import CandidateRow  # noqa: E402
from .state import make_algorithm, tell_row, told_in_order  # noqa: E402
from .states import State  # noqa: E402

__all__ = ["Progress", "progress_info", "plot_progress", "ParetoInfo", "pareto_info", "plot_pareto", "plot_graph",
           "graph_figure", "RerankPoint", "plot_rerank"]


@dataclass(frozen=True)
class Progress:
    """Best-so-far and population-median mean accuracy after each finished search candidate."""

    label: str
    x: list[float]  # evaluations (or training steps) spent so far
    best: list[Optional[float]]
    median: list[Optional[float]]


def progress_info(rows: Sequence[CandidateRow], cfg: Mapping[str, Any], label: str,
                  budget: str = "evaluations") -> Progress:
    """Replay the run in the order results were told; ``budget`` is ``evaluations`` or ``steps``.

    The median is over the algorithm's population at that moment (over every passed candidate so far for
    random search, which keeps none).
    """
    if budget not in ("evaluations", "steps"):
        raise ValueError(f"budget must be 'evaluations' or 'steps', got {budget!r}")
    algorithm = make_algorithm(cfg)
    xs, best, median, passed = [], [], [], []
    spent, top = 0.0, None
    for row in told_in_order(rows):
        tell_row(algorithm, row)
        spent += (row.duplicate_of is None) if budget == "evaluations" else row.steps  # duplicates cost nothing
        if row.passed and row.fitness:
            passed.append(row.mean_fitness)
            top = row.mean_fitness if top is None else max(top, row.mean_fitness)
        population = [sum(m.fitness.values()) / len(m.fitness) for m in algorithm.population]
        pool = population or passed
        xs.append(spent)
        best.append(top)
        median.append(statistics.median(pool) if pool else None)
    return Progress(label, xs, best, median)


def plot_progress(curves: Sequence[Progress], path: Path, budget: str = "evaluations",
                  references: Mapping[str, float] = {}) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, curve in enumerate(curves):
        color = f"C{i}"
        ax.plot(curve.x, [b if b is not None else float("nan") for b in curve.best], color=color, lw=2,
                label=f"{curve.label}: best")
        ax.plot(curve.x, [m if m is not None else float("nan") for m in curve.median], color=color, lw=1,
                ls="--", label=f"{curve.label}: population median")
    for name, value in sorted(references.items()):
        ax.axhline(value, color="gray", lw=0.8, ls=":")
        ax.text(0.01, value, f" {name}", transform=ax.get_yaxis_transform(), fontsize=8, color="gray", va="bottom")
    return _save(fig, ax, path, "training steps spent" if budget == "steps" else "candidates evaluated",
                 "mean validation accuracy", "Search progress")


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _write(fig, path, dpi=120)


def _write(fig, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ParetoInfo:
    archs: tuple[str, str]
    others: list[tuple[float, float]]       # every passed candidate
    population: list[tuple[float, float]]   # the final population
    front: list[tuple[float, float]]        # its Pareto front over the two architectures, sorted
    references: dict[str, tuple[float, float]]


def pareto_info(rows: Sequence[CandidateRow], population: Sequence, archs: Sequence[str]) -> ParetoInfo:
    """Points for two architectures; ``population`` holds members with ``.fitness`` (``search.Member``)."""
    a, b = archs

    def point(fitness):
        return fitness[a], fitness[b]

    usable = [r for r in rows if r.status is State.OK and r.fitness and a in r.fitness and b in r.fitness]
    members = [m for m in population if a in m.fitness and b in m.fitness]
    front = pareto_front([type(m)(m.id, m.graph, {a: m.fitness[a], b: m.fitness[b]}) for m in members])
    return ParetoInfo(
        (a, b), [point(r.fitness) for r in usable if not r.is_reference], [point(m.fitness) for m in members],
        sorted(point(m.fitness) for m in front),
        {r.name: point(r.fitness) for r in usable if r.is_reference})


def plot_pareto(info: ParetoInfo, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if info.others:
        ax.scatter(*zip(*info.others), s=12, color="lightgray", label="passed candidates")
    if info.population:
        ax.scatter(*zip(*info.population), s=22, color="C0", label="final population")
    if info.front:
        ax.plot(*zip(*info.front), "o-", color="C3", ms=6, label="Pareto front")
    for name, (x, y) in info.references.items():
        ax.scatter([x], [y], marker="*", s=120, color="k")
        ax.annotate(name, (x, y), xytext=(5, 3), textcoords="offset points", fontsize=8)
    return _save(fig, ax, path, f"{info.archs[0]} validation accuracy", f"{info.archs[1]} validation accuracy",
                 "Final population")


def plot_graph(graph: LayerGraph, path: Path, title: str = "") -> Path:
    """The pruned graph, left to right by depth, nodes labelled by op (inputs by name)."""
    return _write(graph_figure(graph, title), path, dpi=110)


def graph_figure(graph: LayerGraph, title: str = ""):
    """:func:`plot_graph`'s drawing as a matplotlib figure (TensorBoard takes figures)."""
    pruned = graph.pruned()
    g = nx.DiGraph()
    depth = {k: 0 for k in INPUTS}
    for node, op, inputs in pruned.rows():
        depth[node] = 1 + max(depth[s] for s in inputs)
        g.add_node(node, label=op.replace("_", "\n"), layer=depth[node])
        for s in inputs:
            if s not in g:
                g.add_node(s, label=s, layer=0)
            g.add_edge(s, node)
    pos = nx.multipartite_layout(g, subset_key="layer")
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * (max(depth.values()) + 1), 3.6))
    colors = ["#cfe3f7" if n in INPUTS else ("#f7d9cf" if n == pruned.output else "#e8e8e8") for n in g]
    nx.draw_networkx(g, pos, ax=ax, labels=nx.get_node_attributes(g, "label"), node_color=colors,
                     node_size=1500, font_size=7, arrows=True, arrowsize=12, edgecolors="#666666",
                     connectionstyle="arc3,rad=0.12")
    ax.set_title(title or graph.formula(), fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class RerankPoint:
    """One retrained layer: its search fitness against its re-ranked test accuracy (``search.rerank``)."""

    label: str
    search: Optional[float]  # mean validation accuracy in the search (None: it did not pass there)
    mean: float              # mean test accuracy after retraining, over seeds
    std: float               # its standard deviation over seeds
    reference: bool


def plot_rerank(points: Sequence[RerankPoint], path: Path, title: str) -> Path:
    """Search fitness (x) against re-ranked test accuracy (y, error bars: one standard deviation over seeds);
    each reference's re-ranked accuracy is also a dotted line, so it shows even if it failed in the search."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for reference, marker, color, name in ((False, "o", "C0", "search candidates"), (True, "*", "k", "references")):
        group = [p for p in points if p.reference == reference and p.search is not None]
        if group:
            ax.errorbar([p.search for p in group], [p.mean for p in group], yerr=[p.std for p in group],
                        fmt=marker, color=color, ms=9 if reference else 6, capsize=3, label=name)
        for p in group:
            ax.annotate(p.label, (p.search, p.mean), xytext=(5, 3), textcoords="offset points", fontsize=8)
    for p in points:
        if p.reference:
            ax.axhline(p.mean, color="gray", lw=0.8, ls=":")
            ax.text(0.01, p.mean, f" {p.label}", transform=ax.get_yaxis_transform(), fontsize=8, color="gray",
                    va="bottom")
    return _save(fig, ax, path, "search fitness (mean validation accuracy)",
                 "re-ranked test accuracy (mean over seeds)", title)
