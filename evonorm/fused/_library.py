"""Registration shared by the operator contracts (:mod:`.s0_op`, :mod:`.b0_op`).

Each fused layer is a pair of ``torch.library`` custom ops: a differentiable forward whose autograd
formula calls a backward op, so ``torch.compile(fullgraph=True)`` sees two opaque, functional ops
with fake (meta) implementations and ``torch.library.opcheck`` can test both.
"""
from typing import Callable, Tuple

import torch


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
    return forward_op


def _no_context(ctx, inputs, output):
    pass
