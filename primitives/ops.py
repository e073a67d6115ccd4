"""The op vocabulary: one record per primitive, read by the compiler, the printer, the hasher and the exporter.

Keeping every fact about an op in one registry means the compiled layer, the printed formula and the
generated export code can never drift apart.

Element-wise ops never raise and never hide a blow-up: ``div`` is plain IEEE division (Inf/NaN propagate so
the evaluator can see and reject them), while the sign-preserving ``log`` and ``sqrt`` return 0 with gradient
0 at exactly 0 (the double-``where`` trick), where the raw formula has no finite value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .autograd import divide, maximum
from .stats import MOMENT_OF

__all__ = ["Op", "OPS", "AXES", "STATS", "get_op", "op_names", "PAPER_OPS", "S_SERIES_OPS"]

AXES = ("batch", "layer", "instance", "group")
STATS = ("mean", "std", "rms")


def signed_log(a: torch.Tensor) -> torch.Tensor:
    """sign(a) * ln|a|, 0 (with gradient 0) at a == 0."""
    zero = a == 0
    safe = torch.where(zero, torch.ones_like(a), a)
    return torch.where(zero, torch.zeros_like(a), torch.sign(safe) * torch.log(torch.abs(safe)))


def signed_sqrt(a: torch.Tensor) -> torch.Tensor:
    """sign(a) * sqrt|a|, 0 (with gradient 0) at a == 0."""
    zero = a == 0
    safe = torch.where(zero, torch.ones_like(a), a)
    return torch.where(zero, torch.zeros_like(a), torch.sign(safe) * torch.sqrt(torch.abs(safe)))


@dataclass(frozen=True)
class Op:
    """One primitive.

    ``fn`` computes an element-wise op; aggregates carry ``axes`` and ``stat`` instead and are computed by
    ``primitives.stats``. ``code`` is the torch expression the exporter writes (``{0}``, ``{1}`` are the
    inputs, ``x`` the layer's input, ``self`` the exported module); ``formula`` prints the op, ``prec`` is its
    binding strength for parentheses (higher binds tighter; infix ops only).
    """

    name: str
    arity: int
    commutative: bool
    formula: str
    fn: Optional[Callable[..., torch.Tensor]] = None
    code: Optional[str] = None
    prec: int = 100
    axes: Optional[str] = None
    stat: Optional[str] = None

    @property
    def is_aggregate(self) -> bool:
        return self.axes is not None

    @property
    def uses_batch_stats(self) -> bool:
        return self.axes == "batch"

    def format(self, *args: str) -> str:
        return self.formula.format(*args)


def _elementwise() -> list[Op]:
    return [
        Op("add", arity=2, commutative=True, formula="{0} + {1}", fn=torch.add, code="{0} + {1}", prec=1),
        Op("mul", arity=2, commutative=True, formula="{0} * {1}", fn=torch.mul, code="{0} * {1}", prec=2),
        Op("div", arity=2, commutative=False, formula="{0} / {1}", fn=divide, code="{0} / {1}", prec=2),
        Op("max", arity=2, commutative=True, formula="max({0}, {1})", fn=maximum, code="torch.maximum({0}, {1})"),
        Op("neg", arity=1, commutative=False, formula="-{0}", fn=torch.neg, code="-{0}", prec=3),
        Op("sigmoid", arity=1, commutative=False, formula="sigmoid({0})", fn=torch.sigmoid,
           code="torch.sigmoid({0})"),
        Op("tanh", arity=1, commutative=False, formula="tanh({0})", fn=torch.tanh, code="torch.tanh({0})"),
        Op("exp", arity=1, commutative=False, formula="exp({0})", fn=torch.exp, code="torch.exp({0})"),
        Op("log", arity=1, commutative=False, formula="log({0})", fn=signed_log, code="signed_log({0})"),
        Op("abs", arity=1, commutative=False, formula="abs({0})", fn=torch.abs, code="torch.abs({0})"),
        Op("square", arity=1, commutative=False, formula="square({0})", fn=torch.square, code="torch.square({0})"),
        Op("sqrt", arity=1, commutative=False, formula="sqrt({0})", fn=signed_sqrt, code="signed_sqrt({0})"),
    ]


def _aggregate_code(axes: str, stat: str) -> str:
    """The exported expression; ``{buffer}`` names a batch aggregate's running moment (primitives.stats)."""
    kind = MOMENT_OF[stat]
    if axes == "batch":
        m = (f'update_running(axis_moment({{0}}.expand_as(x), "batch", "{kind}", 1), self.{{buffer}}, self.momentum) '
             f'if self.training else running_moment(self.{{buffer}}, x)')
    else:
        m = f'axis_moment({{0}}.expand_as(x), "{axes}", "{kind}", self.groups)'
    return f'finish({m}, "{stat}", self.eps, x)'


def _aggregates() -> list[Op]:
    return [
        Op(f"{stat}_{axes}", arity=1, commutative=False, formula=f"{stat}_{axes}({{0}})",
           code=_aggregate_code(axes, stat), axes=axes, stat=stat)
        for stat in STATS
        for axes in AXES
    ]


OPS: dict[str, Op] = {op.name: op for op in _elementwise() + _aggregates()}

# The paper's search space (Table 1): every element-wise op and every aggregate.
PAPER_OPS: tuple[str, ...] = tuple(OPS)
# The S-series search space: no batch statistics, so the layer is batch-independent.
S_SERIES_OPS: tuple[str, ...] = tuple(name for name, op in OPS.items() if not op.uses_batch_stats)


def _clean(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_op(name: str) -> Op:
    """Look an op up by name (case and dashes ignored); unknown names list the valid ones."""
    try:
        return OPS[_clean(name)]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}") from None


def op_names(names) -> tuple[str, ...]:
    """Validate a configured op set and return its canonical names, in the given order."""
    names = tuple(get_op(n).name for n in names)
    if not names:
        raise ValueError("the op set is empty; name at least one op")
    return names
