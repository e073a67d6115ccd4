r"""A layer's training cost relative to BN-ReLU, counted from its graph: the search's cost objective.

.. math::
    \mathrm{cost}(g) = \frac{P(g)}{P_{\mathrm{BN\text{-}ReLU}}}, \qquad
    P(g) = P_{\mathrm{affine}} + \sum_{n \in \mathrm{live}(g)} (f_n + b_n) + \sum_{v} 3\,(k_v - 1)

P counts passes over a full-size (N, C, \*spatial) tensor, a read or a write of one such tensor counting 1, in
the forward (``f_n``) and backward (``b_n``) pass of the compiled layer (``primitives.compile``: one torch
kernel per op of the pruned graph). At a normalization layer's size the time goes to memory traffic and
kernel launches, not arithmetic, so these passes track the time. Reduced tensors (``v0``, ``v1``, statistics
and what is computed from them alone: one value per channel, sample or group) are broadcast and cost nothing.

* An element-wise node with a full-size value reads its full-size inputs and writes its value; backward, each
  input that carries a gradient gets one kernel that reads the gradient and the saved operand it needs and
  writes the input's gradient, summed down (one more read) for a reduced input. ``add`` passes its gradient
  through; ``div`` and ``max`` count the kernels of ``primitives.autograd``; the sign-preserving ``log`` and
  ``sqrt`` (the double-``where`` trick) about ten kernels each way (``UNARY_EXTRA``).
* A plug-in op (``primitives.register_op``) counts as one kernel each way: it reads its full-size inputs and
  writes its value, and each input's gradient kernel reads the gradient and every full-size input.
* An aggregate reads its input (expanded to x's shape): ``mean`` 1 pass forward, 0 backward; ``rms`` 3 and 2;
  ``std`` 6 and 5 (the two-pass variance of ``primitives.stats``).
* A full-size value read by k_v > 1 nodes that carry a gradient adds up k_v gradients (3 passes each).
* The affine map ``g(x) * weight + bias``: 4 forward, 7 backward (``AFFINE_PASSES``); when the layer folds the
  graph's last ``body / scale`` or ``body * scale`` into ``weight`` (``compile.output_scale``), that node is
  free.

BN-ReLU (native ``nn.BatchNorm2d`` and an in-place ReLU) is not a graph of the DSL, whose ReLU would come
after the affine map, so its count is a constant. Its kernels make 14 passes (forward: two reads for the mean
and variance, a read and a write to normalize, a read and a write for the ReLU; backward: 3 for the ReLU, two
reads for BatchNorm's sums, then two reads and a write for the input gradient), but they run slower per pass
than element-wise kernels: timed side by side on a CPU (``bench/cost_model.py``), BN-ReLU takes as long as
about 18 passes of the compiled layers, so ``BN_RELU_PASSES = 18`` and a cost of 1.0 is BN-ReLU's time. GN-ReLU (native ``nn.GroupNorm``, one-pass moments) counts its kernels' 13 passes.

The count depends on the graph alone, so a search ranked by it replays and resumes exactly. It is a count, not
a time: it ignores arithmetic (sigmoid, tanh, exp, log; the slow path of non-finite values), and it is not
checked on a GPU, where a layer this small is bound by kernel launches rather than passes.
"""
from __future__ import annotations

from .compile import output_scale
from .graph import LayerGraph
from .ops import get_op

__all__ = ["BN_RELU_PASSES", "REFERENCE_PASSES", "passes", "relative_cost", "reference_cost"]

BN_RELU_PASSES = 18  # BN-ReLU's time in passes of the compiled layers (the module docstring)
REFERENCE_PASSES = {"bn_relu": BN_RELU_PASSES, "gn_relu": 13}
AFFINE_PASSES = 4 + 7
# Forward and backward passes of an aggregate, by statistic.
AGGREGATE = {"mean": (1, 0), "rms": (3, 2), "std": (6, 5)}
# Passes of a unary op beyond its one kernel each way (read and write forward; read the gradient and the
# saved input or output, write backward): the sign-preserving log and sqrt run about ten kernels each way.
UNARY_EXTRA = {"neg": (0, -1), "sigmoid": (0, 0), "tanh": (0, 0), "exp": (0, 0), "abs": (0, 2),
               "square": (0, 4), "log": (19, 22), "sqrt": (19, 22)}


def _elementwise(op: str, full: list[bool], grad: list[bool]) -> int:
    """Forward and backward passes of an element-wise node whose value is full-size, given which inputs are
    full-size and which carry a gradient."""
    forward = sum(full) + 1

    def grad_kernel(i: int, reads: int) -> int:  # writes input i's gradient; a reduced one is then summed down
        return reads + 1 + (not full[i]) if grad[i] else 0

    if op == "add":  # the gradient passes through; a reduced input sums it
        return forward + sum(g and not f for f, g in zip(full, grad))
    if op == "mul":  # g * b, g * a
        return forward + grad_kernel(0, 1 + full[1]) + grad_kernel(1, 1 + full[0])
    if op == "div":  # g / b, then (g / b) * out summed to b's shape, negated (primitives.autograd)
        return forward + 3 + full[1] + (not full[0]) + 3 + (not full[1]) + 2 * full[1]
    if op == "max":  # the mask (a - b, then sign, add, clamp in place), g * mask, g - g * mask
        return forward + sum(full) + 1 + 6 + 3 + (not full[0]) + 3 + (not full[1])
    if op not in UNARY_EXTRA:  # a plug-in op: one kernel each way, reading every full-size input
        return forward + sum(grad_kernel(i, 1 + sum(full)) for i in range(len(full)))
    extra_forward, extra_backward = UNARY_EXTRA[op]
    return forward + extra_forward + (3 + extra_backward if grad[0] else 0)


def passes(graph: LayerGraph) -> int:
    """Full-size passes of the compiled layer's forward and backward (see the module docstring)."""
    g = graph.validate().pruned()
    full = g.full_size
    grad = {"x", "v0", "v1"}  # values that carry a gradient; ``zero`` and what is computed from it alone do not
    for node, _, inputs in g.rows():
        if any(src in grad for src in inputs):
            grad.add(node)
    fold = output_scale(g)
    readers: dict[str, int] = {}
    total = AFFINE_PASSES
    for node, op, inputs in g.rows():
        spec = get_op(op)
        if spec.is_aggregate:
            forward, backward = AGGREGATE[spec.stat]
            total += forward + (backward if inputs[0] in grad else 0)
        elif node in full and not (fold and node == g.output):
            total += _elementwise(spec.name, [s in full for s in inputs], [s in grad for s in inputs])
        for src in inputs:
            if src in full and src in grad:
                readers[src] = readers.get(src, 0) + 1
    return total + sum(3 * (k - 1) for k in readers.values() if k > 1)


def relative_cost(graph: LayerGraph) -> float:
    """The layer's forward-and-backward cost in units of BN-ReLU's (``passes / BN_RELU_PASSES``)."""
    return passes(graph) / BN_RELU_PASSES


def reference_cost(name: str) -> float:
    """The cost of a reference layer that is not a graph (``bn_relu`` 1.0, ``gn_relu``), relative to BN-ReLU."""
    key = name.strip().lower().replace("-", "_")
    if key not in REFERENCE_PASSES:
        raise ValueError(f"no cost for reference {name!r}; known: {', '.join(REFERENCE_PASSES)}")
    return REFERENCE_PASSES[key] / BN_RELU_PASSES
