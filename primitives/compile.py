"""Compile a ``LayerGraph`` into a torch module that runs the pruned graph, each node once."""
from __future__ import annotations

import torch
from torch import nn

from .graph import INPUTS, LayerGraph
from .ops import get_op
from .stats import INITIAL_MOMENT, MOMENT_OF, accumulation_dtype, finish, moment, resolve_groups

__all__ = ["GraphLayer", "compile_graph"]

_PARAM_INIT = {"v0": 0.0, "v1": 1.0}


class GraphLayer(nn.Module):
    r"""A normalization-activation layer evolved as a graph, followed by a per-channel affine map.

    .. math::
        y = g(x) \cdot \mathrm{weight} + \mathrm{bias}

    where g is the pruned graph. ``v0`` (init 0) and ``v1`` (init 1) are per-channel parameters that exist
    only when the graph reads them. Batch aggregates keep running moments (``running_var``, ``running_msq``,
    ``running_mean``, suffixed with the node id when one graph has several of a kind), updated in training
    with ``momentum`` from the biased batch moment and used in eval mode, eps added where the root is taken.
    Statistics reduce in float32 for fp16/bf16 inputs. ``apply_act=False`` gives the affine-only form.

    Shape: (N, C, *spatial) -> same; channels_last inputs work.
    """

    def __init__(self, graph: LayerGraph, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 groups: int = 32, apply_act: bool = True, device=None, dtype=None):
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.graph = graph.validate().pruned()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.groups = resolve_groups(num_features, groups)
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        used = self.graph.used_inputs if apply_act else set()
        for name in ("v0", "v1"):
            param = nn.Parameter(torch.empty(num_features, **factory_kwargs)) if name in used else None
            self.register_parameter(name, param)
        self._plan = self._make_plan(factory_kwargs) if apply_act else []
        self.reset_parameters()

    def _make_plan(self, factory_kwargs) -> list[tuple[str, str, tuple[str, ...], str | None, tuple[str, ...]]]:
        """Steps ``(node, op, inputs, running buffer, values to free after it)`` in order."""
        rows = self.graph.rows()
        batch_nodes = [(node, MOMENT_OF[get_op(op).stat]) for node, op, _ in rows if get_op(op).uses_batch_stats]
        kinds = [m for _, m in batch_nodes]
        buffers = {node: f"running_{m}" if kinds.count(m) == 1 else f"running_{m}_{node}" for node, m in batch_nodes}
        for name in buffers.values():
            self.register_buffer(name, torch.empty(self.num_features, **factory_kwargs))
        last_use = {src: i for i, (_, _, inputs) in enumerate(rows) for src in inputs}
        plan = []
        for i, (node, op, inputs) in enumerate(rows):
            free = tuple(sorted({src for src in inputs if last_use[src] == i}))
            plan.append((node, op, inputs, buffers.get(node), free))
        return plan

    def reset_running_stats(self) -> None:
        for node, op, _, buffer, _ in self._plan:
            if buffer is not None:
                getattr(self, buffer).fill_(INITIAL_MOMENT[MOMENT_OF[get_op(op).stat]])

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        for name, value in _PARAM_INIT.items():
            if getattr(self, name) is not None:
                nn.init.constant_(getattr(self, name), value)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected input of shape (N, C, *spatial) with at least 2 dims, got {x.dim()}D input")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels in dim 1, got input of shape {tuple(x.shape)}")

    def _channel(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.to(x.dtype).view((1, -1) + (1,) * (x.dim() - 2))

    def _aggregate(self, op_name: str, a: torch.Tensor, x: torch.Tensor, buffer: str | None) -> torch.Tensor:
        op = get_op(op_name)
        if a.shape != x.shape:  # v0, v1, zero or a reduced value: broadcast first, as the DSL defines
            a = a.expand_as(x)
        kind = MOMENT_OF[op.stat]
        if buffer is not None and not self.training:
            m = getattr(self, buffer).to(accumulation_dtype(x.dtype)).view((1, -1) + (1,) * (x.dim() - 2))
        else:
            m = moment(a, op.axes, kind, self.groups)
        if buffer is not None and self.training:
            with torch.no_grad():
                running = getattr(self, buffer)
                running.lerp_(m.detach().reshape(-1).to(running.dtype), self.momentum)
        return finish(m, op.stat, self.eps, x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self._plan:
            values = {"x": x, "zero": x.new_zeros(())}
            for name in ("v0", "v1"):
                if getattr(self, name) is not None:
                    values[name] = self._channel(getattr(self, name), x)
            for node, op, inputs, buffer, free in self._plan:
                args = [values[src] for src in inputs]
                fn = get_op(op).fn
                values[node] = fn(*args) if fn is not None else self._aggregate(op, args[0], x, buffer)
                for src in free:
                    if src not in INPUTS:
                        del values[src]
            out = values[self.graph.output]
            x = out if out.shape == x.shape else out.expand_as(x)
        return x * self._channel(self.weight, x) + self._channel(self.bias, x)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, formula={self.graph.formula()!r}, groups={self.groups}, eps={self.eps}, "
                f"momentum={self.momentum}, apply_act={self.apply_act}")


def compile_graph(graph: LayerGraph, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                  groups: int = 32, apply_act: bool = True, device=None, dtype=None) -> GraphLayer:
    """Build the torch layer for ``graph`` (``apply_act=False``: the affine-only form, as the official code)."""
    return GraphLayer(graph, num_features, eps=eps, momentum=momentum, groups=groups, apply_act=apply_act,
                      device=device, dtype=dtype)
