"""Random search: the baseline that evolution must beat at the same budget, with the same journal.

It proposes the configured seed graphs first (so both algorithms start from the same knowledge), then
independent random graphs of the configured size, op set and prior; results never steer it.
"""
from __future__ import annotations

import random
from typing import Mapping, Optional, Sequence

from primitives import LayerGraph, random_graph

from .evolution import Proposal
from .states import Role

__all__ = ["RandomSearch"]


class RandomSearch:
    def __init__(self, ops: Sequence[str], num_nodes: int = 10, seeds: Sequence[tuple[str, LayerGraph]] = (),
                 prior: str = "uniform"):
        self.ops = tuple(ops)
        self.num_nodes = num_nodes
        self.seeds = tuple(seeds)
        self.prior = prior

    @property
    def population(self) -> tuple:
        """Random search keeps no population."""
        return ()

    def ask(self, rng: random.Random, num_proposed: int) -> Proposal:
        if num_proposed < len(self.seeds):
            name, graph = self.seeds[num_proposed]
            return Proposal(graph, Role.SEED, name=name)
        return Proposal(random_graph(rng, self.ops, self.num_nodes, self.prior), Role.RANDOM)

    def tell(self, candidate_id: int, graph: LayerGraph, fitness: Optional[Mapping[str, float]],
             fingerprint: Optional[str] = None) -> None:
        """Results do not steer random search."""
