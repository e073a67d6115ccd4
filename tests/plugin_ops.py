"""A plug-in module for the tests (``search.plugins=[tests.plugin_ops]``): importing it registers two ops.

``forget()`` undoes the import (the ops leave the registry, the module leaves ``sys.modules``), so that every
test starts from the built-in registry and the next import registers the ops again.
"""
import sys

import torch

from primitives import register_op
from primitives.ops import OPS, unregister_op

NAMES = ("softsign_t", "smax_t")


def softsign(a: torch.Tensor) -> torch.Tensor:
    return a / (1 + torch.abs(a))


def smooth_max(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + b + torch.sqrt(torch.square(a - b) + 1.0))


register_op("softsign_t", 1, softsign, "softsign_t({0})")
register_op("smax_t", 2, smooth_max, "smax_t({0}, {1})", commutative=True)


def forget(*modules: str, ops=NAMES) -> None:
    for name in ops:
        if name in OPS:
            unregister_op(name)
    for module in (__name__, *modules):
        sys.modules.pop(module, None)
