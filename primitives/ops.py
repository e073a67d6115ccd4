"""The op vocabulary: one record per primitive, read by the compiler, the printer, the hasher and the exporter.

Keeping every fact about an op in one registry means the compiled layer, the printed formula and the
generated export code can never drift apart.

Element-wise ops never raise and never hide a blow-up: ``div`` is plain IEEE division (Inf/NaN propagate so
the evaluator can see and reject them), while the sign-preserving ``log`` and ``sqrt`` return 0 with gradient
0 at exactly 0 (the double-``where`` trick), where the raw formula has no finite value.

``register_op`` adds an element-wise op from outside the package (a plug-in); from then on it works wherever a
built-in op does (graph YAML, formula, hashes, compiler, code generator). The built-in ops are ``BUILTIN_OPS``.
"""
from __future__ import annotations

import re
import string
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import autograd
from .autograd import divide, maximum
from .stats import MOMENT_OF

__all__ = ["Op", "OPS", "BUILTIN_OPS", "AXES", "STATS", "get_op", "op_names", "register_op", "unregister_op",
           "PAPER_OPS", "S_SERIES_OPS"]

AXES = ("batch", "layer", "instance", "group")
STATS = ("mean", "std", "rms")


def signed_log(a: torch.Tensor) -> torch.Tensor:
    """sign(a) * ln|a|, 0 (with gradient 0) at a == 0. The compiler runs ``autograd.signed_log`` instead (the
    same values, a leaner backward); exported layers carry this source."""
    zero = a == 0
    safe = torch.where(zero, torch.ones_like(a), a)
    return torch.where(zero, torch.zeros_like(a), torch.sign(safe) * torch.log(torch.abs(safe)))


def signed_sqrt(a: torch.Tensor) -> torch.Tensor:
    """sign(a) * sqrt|a|, 0 (with gradient 0) at a == 0 (compiled as ``autograd.signed_sqrt``, as above)."""
    zero = a == 0
    safe = torch.where(zero, torch.ones_like(a), a)
    return torch.where(zero, torch.zeros_like(a), torch.sign(safe) * torch.sqrt(torch.abs(safe)))


@dataclass(frozen=True)
class Op:
    """One primitive.

    ``fn`` computes an element-wise op; aggregates carry ``axes`` and ``stat`` instead and are computed by
    ``primitives.stats``. ``code`` is the torch expression the exporter writes (``{0}``, ``{1}`` are the
    inputs, ``x`` the layer's input, ``self`` the exported module); ``formula`` prints the op, ``prec`` is its
    binding strength for parentheses (higher binds tighter; infix ops only). ``plugin`` marks an op added by
    ``register_op``; ``source`` is the ``module:function`` its exported code imports (None when it has none).
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
    plugin: bool = False
    source: Optional[str] = None

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
        Op("log", arity=1, commutative=False, formula="log({0})", fn=autograd.signed_log, code="signed_log({0})"),
        Op("abs", arity=1, commutative=False, formula="abs({0})", fn=torch.abs, code="torch.abs({0})"),
        Op("square", arity=1, commutative=False, formula="square({0})", fn=torch.square, code="torch.square({0})"),
        Op("sqrt", arity=1, commutative=False, formula="sqrt({0})", fn=autograd.signed_sqrt, code="signed_sqrt({0})"),
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
BUILTIN_OPS: frozenset[str] = frozenset(OPS)

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


_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_PROBE_SHAPE = (2, 3, 4, 4)


def register_op(name: str, arity: int, fn: Callable[..., torch.Tensor], formula: str, *,
                commutative: bool = False, code: Optional[str] = None) -> Op:
    """Add an element-wise op to the registry (a plug-in op); returns its ``Op``.

    From then on the op works wherever a built-in one does: in graph YAML, ``formula()``, the structural hash,
    the fingerprint, ``compile_graph`` and ``layer_source``; a search names it in ``search.ops`` once the module
    that registers it is listed in ``search.plugins``.

    Args:
        name: lowercase letters, digits and underscores, starting with a letter (dashes and case are cleaned
            up, as on lookup); not a built-in op's name.
        arity: the number of inputs (at least 1).
        fn: ``fn(*inputs) -> Tensor``, element-wise: its value has the broadcast shape of its inputs, which are
            x-sized (N, C, *spatial) or reduced tensors that broadcast against x (``v1``, statistics). It is
            called once here on float32 tensors of shape (2, 3, 4, 4) to check that.
        formula: how the formula printer writes the op, one placeholder per input: ``"softsign({0})"``. The
            inputs are inserted as they print, so write a call, not an infix operator.
        commutative: whether the inputs' order does not matter (the structural hash then sorts them).
        code: the torch expression an exported layer writes, placeholders as in ``formula``
            (``"torch.nn.functional.softsign({0})"``); the exported file then needs torch only. By default it
            imports ``fn`` from its module (``from my_ops import softsign as _op_softsign``) and calls it, which
            needs a module-level function of an importable module (not ``__main__``, not a lambda).

    Registering an op again with the same definition (the same function, or the same code of a module imported
    a second time) changes nothing, so a plug-in module may be imported twice; any other definition under a taken
    name raises ``ValueError``, as do a built-in op's name, a formula without a placeholder per input and a
    function that is not element-wise. ``unregister_op`` takes a plug-in op out again.
    """
    if not isinstance(name, str) or not _PLUGIN_NAME.match(_clean(name)):
        raise ValueError(f"op name {name!r} must be lowercase letters, digits and underscores, starting with a "
                         "letter")
    name = _clean(name)
    if name in BUILTIN_OPS:
        raise ValueError(f"op name {name!r} is a built-in op; a plug-in op needs another name "
                         f"(built-in ops: {', '.join(sorted(BUILTIN_OPS))})")
    if isinstance(arity, bool) or not isinstance(arity, int) or arity < 1:
        raise ValueError(f"op {name!r}: arity must be a positive integer, got {arity!r}")
    if not callable(fn):
        raise TypeError(f"op {name!r}: fn must be callable, got {fn!r}")
    _check_template(name, "formula", formula, arity)
    if code is not None:
        _check_template(name, "code", code, arity)
    source = None if code is not None else _import_path(fn)
    if code is None and source is not None:
        code = f"_op_{name}({', '.join(f'{{{i}}}' for i in range(arity))})"
    op = Op(name, arity=arity, commutative=bool(commutative), formula=formula, fn=fn, code=code, plugin=True,
            source=source)
    old = OPS.get(name)
    if old is not None:
        if _same_definition(old, op):
            return old
        raise ValueError(f"op {name!r} is registered already, as {_describe(old)}; got {_describe(op)}. A plug-in "
                         "op name must be unique (unregister_op removes the old one)")
    _check_elementwise(name, arity, fn)
    OPS[name] = op
    return op


def unregister_op(name: str) -> None:
    """Take a plug-in op out of the registry (for tests and notebooks); built-in ops stay."""
    key = _clean(name)
    if key in BUILTIN_OPS:
        raise ValueError(f"op {name!r} is a built-in op and cannot be unregistered")
    if key not in OPS:
        raise ValueError(f"no plug-in op {name!r} is registered")
    del OPS[key]


def _check_template(name: str, what: str, text: object, arity: int) -> None:
    wanted = {str(i) for i in range(arity)}
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None} if isinstance(text, str) else None
    except ValueError:
        fields = None
    if fields != wanted:
        example = "softsign({0})" if arity == 1 else f"f({', '.join(f'{{{i}}}' for i in range(arity))})"
        raise ValueError(f"op {name!r}: {what} must be a format string with the placeholders "
                         f"{', '.join(f'{{{i}}}' for i in range(arity))} (one per input, e.g. {example!r}), "
                         f"got {text!r}")


def _import_path(fn: Callable) -> Optional[str]:
    """``module:function`` when ``fn`` is a module-level function that an exported file can import, else None."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or module == "__main__" or not isinstance(qualname, str) or not qualname.isidentifier():
        return None
    return f"{module}:{qualname}" if getattr(sys.modules.get(module), qualname, None) is fn else None


def _same_definition(a: Op, b: Op) -> bool:
    same_fn = a.fn is b.fn or (getattr(a.fn, "__qualname__", None) == getattr(b.fn, "__qualname__", 0)
                               and getattr(a.fn, "__code__", None) is not None
                               and a.fn.__code__ == getattr(b.fn, "__code__", None))
    return same_fn and (a.arity, a.formula, a.commutative, a.code) == (b.arity, b.formula, b.commutative, b.code)


def _describe(op: Op) -> str:
    where = getattr(op.fn, "__module__", None)
    fn = f"{where}.{getattr(op.fn, '__qualname__', op.fn)}" if where else repr(op.fn)
    return f"{fn} (arity {op.arity}, formula {op.formula!r})"


def _check_elementwise(name: str, arity: int, fn: Callable) -> None:
    gen = torch.Generator().manual_seed(0)
    probes = [torch.randn(_PROBE_SHAPE, generator=gen) for _ in range(arity)]
    try:
        out = fn(*probes)
    except Exception as err:  # noqa: BLE001 -- whatever it is, the op cannot be used
        raise ValueError(f"op {name!r}: fn raised on {arity} float32 tensor(s) of shape {_PROBE_SHAPE}: "
                         f"{type(err).__name__}: {err}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != _PROBE_SHAPE:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"op {name!r}: fn must be element-wise (inputs of shape {_PROBE_SHAPE} give a value of "
                         f"that shape), got {got}")
