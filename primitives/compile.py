"""Compile a ``LayerGraph`` into a torch module that runs the pruned graph, each node once."""
from __future__ import annotations

import torch
from torch import nn

from .graph import INPUTS, PARAM_INIT, LayerGraph
from .ops import Op, get_op
from .autograd import moment
from .stats import INITIAL_MOMENT, MOMENT_OF, finish, resolve_groups, running_moment, update_running

__all__ = ["GraphLayer", "compile_graph", "running_buffers", "output_scale"]



def running_buffers(graph: LayerGraph) -> dict[str, str]:
    """The running-moment buffer of each batch aggregate of a pruned graph: ``running_var`` and the like,
    suffixed with the node id when the graph has several of one kind."""
    kinds = {node: MOMENT_OF[get_op(op).stat] for node, op, _ in graph.rows() if get_op(op).uses_batch_stats}
    counts = list(kinds.values())
    return {node: f"running_{m}" if counts.count(m) == 1 else f"running_{m}_{node}" for node, m in kinds.items()}


def output_scale(graph: LayerGraph) -> tuple[str, str, str] | None:
    """``(body, scale, op)`` when a pruned graph's output is ``body * scale`` or ``body / scale`` with a
    full-size body and a reduced scale (a statistic, ``v1``, ...), else None.

    The layer then folds the scale into its affine weight, ``body * (weight op scale) + bias``: one
    full-size pass less forward and about three less backward, on the pattern that ends most normalizing
    layers (S0 is ``... / std_group(x)``). Not in float16, whose range the folded weight can leave.
    """
    op, (a, b) = graph.op(graph.output), (graph.inputs(graph.output) + (None,))[:2]
    full = graph.full_size
    if op == "div" and a in full and b not in full:
        return a, b, "div"
    if op == "mul" and (a in full) != (b in full):
        return (a, b, "mul") if a in full else (b, a, "mul")
    return None


class GraphLayer(nn.Module):
    r"""A normalization-activation layer evolved as a graph, followed by a per-channel affine map.

    .. math::
        y = g(x) \cdot \mathrm{weight} + \mathrm{bias}

    where g is the pruned graph (when g ends by scaling a full-size value by a reduced one, the scale is folded
    into ``weight``: see ``output_scale``). ``v0`` (init 0) and ``v1`` (init 1) are per-channel parameters that
    exist only when the graph reads them. Batch aggregates keep running moments (``running_var``,
    ``running_msq``, ``running_mean``, suffixed with the node id when one graph has several of a kind), updated
    in training with ``momentum`` from the biased batch moment and used in eval mode, eps added where the root
    is taken. Statistics reduce in float32 for fp16/bf16 inputs. ``apply_act=False`` gives the affine-only form.

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
        self._reads_zero = "zero" in used
        self._fold = output_scale(self.graph) if apply_act else None
        self._plan = self._make_plan(factory_kwargs) if apply_act else []
        self.reset_parameters()

    def _make_plan(self, factory_kwargs) -> list[tuple[str, Op, tuple[str, ...], str | None, tuple[str, ...]]]:
        """Steps ``(node, op, inputs, running buffer, values to free after it)`` in order; ops are looked up
        here once, not in every forward pass."""
        rows = self.graph.rows()
        buffers = running_buffers(self.graph)
        for name in buffers.values():
            self.register_buffer(name, torch.empty(self.num_features, **factory_kwargs))
        last_use = {src: i for i, (_, _, inputs) in enumerate(rows) for src in inputs}
        plan = []
        for i, (node, op, inputs) in enumerate(rows):
            free = tuple(sorted({src for src in inputs if last_use[src] == i}))
            plan.append((node, get_op(op), inputs, buffers.get(node), free))
        return plan

    def reset_running_stats(self) -> None:
        for node, op, _, buffer, _ in self._plan:
            if buffer is not None:
                getattr(self, buffer).fill_(INITIAL_MOMENT[MOMENT_OF[op.stat]])

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        for name, value in PARAM_INIT.items():
            if getattr(self, name) is not None:
                nn.init.constant_(getattr(self, name), value)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected input of shape (N, C, *spatial) with at least 2 dims, got {x.dim()}D input")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels in dim 1, got input of shape {tuple(x.shape)}")

    def _channel(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return p.to(x.dtype).view((1, -1) + (1,) * (x.dim() - 2))

    def _aggregate(self, op: Op, a: torch.Tensor, x: torch.Tensor, buffer: str | None) -> torch.Tensor:
        if a.shape != x.shape:  # v0, v1, zero or a reduced value: the DSL aggregates their broadcast to x's shape
            a = a.expand_as(x)
        kind = MOMENT_OF[op.stat]
        if buffer is None:
            m = moment(a, op.axes, kind, self.groups)
        elif self.training:
            m = update_running(moment(a, "batch", kind, 1), getattr(self, buffer), self.momentum)
        else:
            m = running_moment(getattr(self, buffer), x)
        return finish(m, op.stat, self.eps, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        weight = self._channel(self.weight, x)
        if self.apply_act:
            values = {"x": x}
            if self._reads_zero:
                values["zero"] = x.new_zeros(())
            for name in ("v0", "v1"):
                if getattr(self, name) is not None:
                    values[name] = self._channel(getattr(self, name), x)
            # fp16's range is too narrow for the fold: weight / scale or its gradient (a sum of g * body, not
            # of g * body / scale) can overflow where the unfolded layer stays finite
            fold = self._fold if x.dtype != torch.float16 else None
            for node, op, inputs, buffer, free in self._plan[:-1] if fold else self._plan:
                args = [values[src] for src in inputs]
                values[node] = op.fn(*args) if op.fn is not None else self._aggregate(op, args[0], x, buffer)
                for src in free:
                    if src not in INPUTS:
                        del values[src]
            if fold:
                body, scale, op = fold
                weight = weight / values[scale] if op == "div" else weight * values[scale]
                x = values[body]
            else:
                out = values[self.graph.output]
                x = out if out.shape == x.shape else out.expand_as(x)
        return (x * weight).add_(self._channel(self.bias, x))  # faster than a broadcast addcmul on CPU

    def extra_repr(self) -> str:
        return (f"{self.num_features}, formula={self.graph.formula()!r}, groups={self.groups}, eps={self.eps}, "
                f"momentum={self.momentum}, apply_act={self.apply_act}")


def compile_graph(graph: LayerGraph, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                  groups: int = 32, apply_act: bool = True, device=None, dtype=None) -> GraphLayer:
    """Build the torch layer for ``graph`` (``apply_act=False``: the affine-only form, as the official code)."""
    return GraphLayer(graph, num_features, eps=eps, momentum=momentum, groups=groups, apply_act=apply_act,
                      device=device, dtype=dtype)
