"""Aging evolution with a multi-objective tournament, as in Liu et al. (2020), and the rules it is made of.

Each step samples a tournament from the population, takes the Pareto front of the tournament over the
per-architecture fitness vector (every architecture an objective to maximise; with the ``cost`` objective,
also minus the layer's cost relative to BN-ReLU, ``primitives.cost``), picks the parent uniformly from that
front, and mutates it. A child that passes the evaluator joins the population; once the population is
full the oldest member leaves (aging, as in regularized evolution, Real et al. 2019), so a lucky early
evaluation cannot rule forever.

The population holds distinct functions: a function (its fingerprint, else its structural hash) joins at most
once, so a clone answered from the journal never becomes a young copy of an old lucky evaluation, and a child
that is structurally its parent or another member is redrawn before it is proposed. Mutation starts once the
population holds ``population_size`` members (or after ``max_initial`` random proposals, from whatever
passed); until then the algorithm proposes random graphs.

This module is pure: it holds the population and answers ``ask(rng, num_proposed)`` and ``tell(...)``, drawing
only from the ``random.Random`` it is given. The driver gives every proposal its own generator, derived from
the run seed and the candidate id, and replays the journal's results in their recorded order to rebuild the
state, so a resumed run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from primitives import LayerGraph, mutate, random_graph, viable
from primitives.cost import relative_cost

from .states import Role

__all__ = ["Proposal", "Member", "dominates", "pareto_front", "objective_vector", "Evolution", "MAX_REDRAWS",
           "COST_KEY"]

# Mutations tried per child before a clone of a member (or, under the structural prior, a non-viable child)
# is proposed anyway; the driver then answers it from the journal.
MAX_REDRAWS = 100
# The cost's entry in an objective vector: minus the cost, so that every entry is maximised.
COST_KEY = "-cost"


@dataclass(frozen=True)
class Proposal:
    """A graph to evaluate: ``role`` is ``seed``, ``initial`` (random, filling the first population) or
    ``child`` (a mutated tournament winner, ``parent_id``); ``name`` names a seed graph."""

    graph: LayerGraph
    role: Role
    parent_id: Optional[int] = None
    name: Optional[str] = None


@dataclass(frozen=True)
class Member:
    id: int
    graph: LayerGraph
    fitness: Mapping[str, float]
    structural_hash: str = ""
    cost: Optional[float] = None  # relative to BN-ReLU; set when the search has the cost objective


def dominates(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """``a`` is at least as good as ``b`` on every architecture and better on one (a missing one counts as -inf)."""
    keys = set(a) | set(b)
    ge = all(a.get(k, float("-inf")) >= b.get(k, float("-inf")) for k in keys)
    return ge and any(a.get(k, float("-inf")) > b.get(k, float("-inf")) for k in keys)


def objective_vector(fitness: Mapping[str, float], cost: Optional[float] = None) -> dict[str, float]:
    """What a tournament and the ranking maximise: the per-architecture accuracies, and minus ``cost`` when
    given (under ``COST_KEY``)."""
    return dict(fitness) if cost is None else {**fitness, COST_KEY: -cost}


def _objectives(m: Member) -> dict[str, float]:
    return objective_vector(m.fitness, m.cost)


def pareto_front(members: Sequence[Member], key: Callable[[Member], Mapping[str, float]] = _objectives
                 ) -> list[Member]:
    """The members no other member dominates over ``key`` (the fitness, and minus the cost when the member has
    one), in the given order."""
    vectors = [key(m) for m in members]
    return [m for i, m in enumerate(members)
            if not any(dominates(vectors[j], vectors[i]) for j in range(len(members)) if j != i)]


class Evolution:
    """Aging evolution with Pareto tournaments over a population of distinct functions.

    Args:
        ops: the op set that random graphs and mutations draw from (e.g. no batch aggregates for S-series).
        population_size: members kept; the oldest leaves when a child joins a full population.
        tournament_size: members sampled per tournament (fewer while the population is smaller).
        num_nodes: intermediate nodes of a random graph.
        seeds: ``(name, graph)`` pairs proposed first, as members of the initial population.
        mutation_nodes: mutations applied per child (the paper: 1).
        prior: ``structural`` or ``uniform`` (the paper's), for random graphs and children
            (``primitives.random_graph``).
        mutation: ``structural`` or ``paper`` (``primitives.mutate``).
        max_initial: random proposals after which a partial (non-empty) population is mutated anyway;
            0 proposes random graphs until the population is full.
        max_nodes: the most intermediate nodes a child may grow to (structural mutation inserts nodes).
        objectives: ``accuracy``, or ``accuracy`` and ``cost``: the tournament's front then also minimises
            each member's cost relative to BN-ReLU (``primitives.cost``, a function of the graph alone, so
            replay computes it again exactly).
    """

    def __init__(self, ops: Sequence[str], population_size: int, tournament_size: int, num_nodes: int = 10,
                 seeds: Sequence[tuple[str, LayerGraph]] = (), mutation_nodes: int = 1, prior: str = "uniform",
                 mutation: str = "paper", max_initial: int = 0, max_nodes: Optional[int] = None,
                 objectives: Sequence[str] = ("accuracy",)):
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= tournament_size <= population_size:
            raise ValueError(f"tournament_size must lie in [1, population_size={population_size}], "
                             f"got {tournament_size}")
        if mutation_nodes < 1:
            raise ValueError(f"mutation_nodes must be at least 1, got {mutation_nodes}")
        if max_initial < 0:
            raise ValueError(f"max_initial must be 0 (no cap) or positive, got {max_initial}")
        if "accuracy" not in objectives or not set(objectives) <= {"accuracy", "cost"}:
            raise ValueError(f"objectives must be accuracy, optionally with cost, got {list(objectives)}")
        self.ops = tuple(ops)
        self.objectives = tuple(objectives)
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.num_nodes = num_nodes
        self.seeds = tuple(seeds)
        self.mutation_nodes = mutation_nodes
        self.prior = prior
        self.mutation = mutation
        self.max_initial = max_initial
        self.max_nodes = max_nodes
        self._population: deque[Member] = deque()
        self._joined: set[str] = set()  # fingerprints and structural hashes of every member there has been

    @property
    def population(self) -> tuple[Member, ...]:
        """The members, oldest first."""
        return tuple(self._population)

    def mutating(self, num_proposed: int) -> bool:
        """Whether proposal ``num_proposed`` mutates a member (else it is a seed or a random graph)."""
        if num_proposed < len(self.seeds) or not self._population:
            return False
        if len(self._population) >= self.population_size:
            return True
        return bool(self.max_initial) and num_proposed - len(self.seeds) >= self.max_initial

    def ask(self, rng: random.Random, num_proposed: int) -> Proposal:
        """The next graph to evaluate, given how many this algorithm has proposed before it."""
        if num_proposed < len(self.seeds):
            name, graph = self.seeds[num_proposed]
            return Proposal(graph, Role.SEED, name=name)
        taken = {m.structural_hash for m in self._population}
        if not self.mutating(num_proposed):
            for _ in range(MAX_REDRAWS):
                graph = random_graph(rng, self.ops, self.num_nodes, self.prior)
                if graph.structural_hash() not in taken:
                    break
            return Proposal(graph, Role.INITIAL)
        parent = self.select(rng)
        for _ in range(MAX_REDRAWS):
            child = parent.graph
            for _ in range(self.mutation_nodes):
                child = mutate(child, rng, self.ops, self.mutation, self.max_nodes)
            if child.structural_hash() not in taken and (self.prior == "uniform" or viable(child)):
                break
        return Proposal(child, Role.CHILD, parent_id=parent.id)

    def select(self, rng: random.Random) -> Member:
        """A tournament winner: uniform over the Pareto front of a uniform sample of the population."""
        pool = list(self._population)
        tournament = rng.sample(pool, min(self.tournament_size, len(pool)))
        tournament.sort(key=lambda m: m.id)
        return rng.choice(pareto_front(tournament))

    def tell(self, candidate_id: int, graph: LayerGraph, fitness: Optional[Mapping[str, float]],
             fingerprint: Optional[str] = None) -> None:
        """Record a finished evaluation; ``fitness`` is None when the candidate was rejected or failed. A
        function that has been a member before (same ``fingerprint`` or structural hash) does not join."""
        if fitness is None:
            return
        shash = graph.structural_hash()
        keys = {shash, fingerprint} - {None}
        if keys & self._joined:
            return
        self._joined |= keys
        cost = relative_cost(graph) if "cost" in self.objectives else None
        self._population.append(Member(candidate_id, graph, dict(fitness), shash, cost))
        if len(self._population) > self.population_size:
            self._population.popleft()
