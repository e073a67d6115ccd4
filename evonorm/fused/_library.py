"""Registration shared by the operator contracts (:mod:`.s0_op`, :mod:`.b0_op`).

Each fused layer is a pair of ``torch.library`` custom ops: a differentiable forward whose autograd
formula calls a backward op, so ``torch.compile(fullgraph=True)`` sees two opaque, functional ops
with fake (meta) implementations and ``torch.library.opcheck`` can test both.

Eager calls skip the op machinery: :func:`entry` gives an ``autograd.Function`` that runs the same
kernels with the same autograd formula (Python dispatch of a custom op with an autograd formula
costs more per call than a small layer's kernels leave to spare). Under ``torch.compile`` the ops
themselves serve, so graphs keep them whole.
"""
from typing import Callable, Dict, Tuple

import torch

_eager: Dict[object, Callable] = {}


def define_pair(name: str, kernels: Tuple[Callable, Callable], schemas: Tuple[str, str],
                fakes: Tuple[Callable, Callable], setup_context: Callable,
                backward_formula: Callable):
    """Register ``name`` and ``name + "_backward"``; returns the forward op.

    ``backward_formula(backward_op, ctx, *grads)`` computes the forward's input gradients; the
    backward op itself refuses to be differentiated (analytic kernels, no second-order formula).
    """
    forward_op = torch.library.custom_op(name, kernels[0], mutates_args=(), schema=schemas[0])
    backward_op = torch.library.custom_op(f"{name}_backward", kernels[1], mutates_args=(),
                                          schema=schemas[1])
    forward_op.register_fake(fakes[0])
    backward_op.register_fake(fakes[1])

    def formula(ctx, *grads):
        return backward_formula(backward_op, ctx, *grads)

    def no_double_backward(ctx, *grads):
        raise RuntimeError(f"{name} has an analytic backward that is not differentiable again; "
                           "build the EvoNorm layer with impl='reference' for double backward "
                           "(gradient penalties, Hessian-vector products)")

    forward_op.register_autograd(formula, setup_context=setup_context)
    backward_op.register_autograd(no_double_backward, setup_context=_no_context)
    _eager[forward_op] = _function(name, kernels, setup_context, backward_formula, backward_op)
    return forward_op


def entry(forward_op) -> Callable:
    """What to call for ``forward_op``: the op itself while dynamo traces, else its eager twin."""
    if torch.compiler.is_compiling():
        return forward_op
    return _eager.get(forward_op, forward_op)


def _function(name: str, kernels: Tuple[Callable, Callable], setup_context: Callable,
              backward_formula: Callable, backward_op) -> Callable:
    """``apply`` of an ``autograd.Function`` equivalent to the op pair ``name``.

    Its forward takes ``ctx`` and calls ``setup_context`` itself: a separate ``setup_context``
    makes ``apply`` bind the arguments with ``inspect.signature`` on every call (0.1-0.3 ms on the
    bench machine).
    Backward calls the kernel directly unless a graph of the backward is being recorded
    (``create_graph``): then it calls the backward op, whose formula refuses double backward.
    """
    forward_kernel, backward_kernel = kernels

    def forward(ctx, *inputs):
        output = forward_kernel(*inputs)
        setup_context(ctx, inputs, output)
        return output

    def backward(ctx, *grads):
        op = backward_op if torch.is_grad_enabled() else backward_kernel
        return backward_formula(op, ctx, *grads)

    cls = type(name.replace("::", "_"), (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})
    return cls.apply


def _no_context(ctx, inputs, output):
    pass
