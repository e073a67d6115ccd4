"""Write a graph as a standalone torch module: one readable line per node, torch as the only dependency.

Every expression comes from the op registry's ``code`` templates and every statistic from the source of
``primitives.stats`` itself, so the generated layer computes exactly what ``compile_graph`` computes, and it
stays TorchScript-, ``torch.compile``- and ONNX-friendly. A plug-in op (``primitives.register_op``) is written
as its ``code`` expression when it was given one; else the file imports the op's function from the plug-in's
module and calls it, so the layer computes what the search trained, and needs that module beside torch.
"""
from __future__ import annotations

import inspect
import keyword
import textwrap

from . import ops, stats
from .compile import output_scale, running_buffers
from .graph import INPUTS, PARAM_INIT, LayerGraph
from .ops import get_op

__all__ = ["layer_source"]



def _variable_names(graph: LayerGraph) -> dict[str, str]:
    """A Python name per node, saying what it computes: ``std_group_x``, ``mul_v1_x``, ``sigmoid_2``."""
    names = {k: k for k in INPUTS}
    taken = set(INPUTS) | {"out", "shape", "self"}
    for i, (node, op, inputs) in enumerate(graph.rows(), 1):
        if node == graph.output:
            names[node] = "out"
            continue
        base = f"{op}_{'_'.join(inputs)}" if all(s in INPUTS for s in inputs) else f"{op}_{i}"
        name = base if base not in taken and not keyword.iskeyword(base) else f"{base}_{i}"
        names[node] = name
        taken.add(name)
    return names


def _sub_formulas(graph: LayerGraph) -> dict[str, str]:
    out = {}
    for node, _, _ in graph.rows():
        sub = LayerGraph.from_nodes([r for r in graph.rows() if r[0] in _ancestors(graph, node)])
        out[node] = sub.formula()
    return out


def _ancestors(graph: LayerGraph, node: str) -> set[str]:
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n in seen or n in INPUTS:
            continue
        seen.add(n)
        stack.extend(graph.inputs(n))
    return seen


def _helpers(graph: LayerGraph) -> str:
    used = {op for _, op, _ in graph.rows()}
    funcs = [f for name, f in (("log", ops.signed_log), ("sqrt", ops.signed_sqrt)) if name in used]
    if any(get_op(op).is_aggregate for op in used):
        funcs += list(stats.SCRIPTABLE)
    return "\n\n".join(inspect.getsource(f) for f in funcs)


def _plugin_imports(graph: LayerGraph) -> list[str]:
    """``from my_ops import softsign as _op_softsign`` for each plug-in op the pruned graph calls by import."""
    lines = []
    for name in sorted({op for _, op, _ in graph.rows()}):
        spec = get_op(name)
        if spec.code is None:
            raise ValueError(f"op {name!r} cannot be exported: its function {spec.fn!r} cannot be imported by "
                             "name (a lambda, a nested function, or one defined in __main__); register a "
                             "module-level function of an importable module, or give register_op a code= "
                             "torch expression")
        if spec.plugin and spec.source is not None:
            module, function = spec.source.split(":")
            lines.append(f"from {module} import {function} as _op_{name}")
    return lines


def layer_source(graph: LayerGraph, class_name: str = "EvolvedNorm") -> str:
    """Python source of a module ``class_name(num_features, eps=1e-5, momentum=0.1, groups=32,
    apply_act=True)`` computing ``graph(x) * weight + bias``, with the parameter and buffer names of
    ``compile_graph(graph, ...)`` (plus ``v0``/``v1`` only where the graph reads them)."""
    if not class_name.isidentifier() or keyword.iskeyword(class_name):
        raise ValueError(f"class name {class_name!r} is not a Python identifier")
    graph = graph.validate().pruned()
    formula = graph.formula()
    params = sorted(graph.used_inputs & set(PARAM_INIT))
    buffers = running_buffers(graph)
    names = _variable_names(graph)
    subs = _sub_formulas(graph)
    imports = _plugin_imports(graph)
    modules = sorted({line.split()[1] for line in imports})

    init_lines = [f"self.{p} = nn.Parameter(torch.empty(num_features))" for p in params]
    init_lines += [f'self.register_buffer("{b}", torch.empty(num_features))' for b in buffers.values()]
    reset_lines = [f"nn.init.constant_(self.{p}, {PARAM_INIT[p]})" for p in params]
    for node, b in buffers.items():
        reset_lines.append(f"self.{b}.fill_({stats.INITIAL_MOMENT[stats.MOMENT_OF[get_op(graph.op(node)).stat]]})")

    body = [f"{p} = self.{p}.to(x.dtype).reshape(shape)" for p in params]
    if "zero" in graph.used_inputs:
        body.append("zero = torch.zeros([], dtype=x.dtype, device=x.device)")
    def line(node: str, op: str, inputs: tuple[str, ...]) -> str:
        expr = get_op(op).code.format(*(names[s] for s in inputs), buffer=buffers.get(node, ""))
        expr = expr.replace("(x.expand_as(x)", "(x")  # a no-op view in the compiler; left out for reading
        comment = subs[node] if len(subs[node]) <= 70 else subs[node][:67] + "..."
        return f"{names[node]} = {expr}  # {comment}"

    rows = graph.rows()
    body += [line(*row) for row in rows[:-1]]
    fold = output_scale(graph)
    if fold:  # the output's scale folds into the affine weight, exactly as compile_graph does it
        body_node, scale, op = fold
        body += ["if x.dtype == torch.float16:  # the folded weight could leave float16's range",
                 f"    {line(*rows[-1])}", "    x = out.expand_as(x)", "else:",
                 f"    weight = weight {'/' if op == 'div' else '*'} {names[scale]}  # {graph.formula()}"]
        if names[body_node] != "x":
            body.append(f"    x = {names[body_node]}")
    else:
        body += [line(*rows[-1]), "x = out.expand_as(x)"]

    batch_note = "uses batch statistics (running moments in eval mode)" if buffers else "batch-independent"
    return _TEMPLATE.format(
        cls=class_name, formula=formula, hash=graph.structural_hash(), nodes=len(graph), batch=batch_note,
        needs=f"torch and the plug-in module(s) {', '.join(modules)}" if modules else "only torch",
        imports="".join(f"\n{line}" for line in imports), helpers=_helpers(graph),
        init=_indent(init_lines, 8), reset=_indent(reset_lines, 12) if reset_lines else "",
        body=_indent(body, 12),
    )


def _indent(lines: list[str], n: int) -> str:
    return textwrap.indent("\n".join(lines), " " * n).lstrip()


_TEMPLATE = '''"""{cls}: a normalization-activation layer found by evolutionary search.

    y = ({formula}) * weight + bias

Graph {hash}: {nodes} nodes, {batch}.
Generated by evonorm-search (Liu et al., "Evolving Normalization-Activation Layers", NeurIPS 2020);
needs {needs}.
"""
from typing import List

import torch
from torch import nn{imports}


{helpers}

class {cls}(nn.Module):
    r"""y = ({formula}) * weight + bias

    Statistics reduce in float32 for fp16/bf16 inputs; ``std`` is sqrt(biased variance + eps) and ``rms`` is
    sqrt(mean of squares + eps). Batch statistics keep running moments (updated with ``momentum``, used in
    eval mode). The group count falls back to the largest divisor of C that is <= ``groups``.
    ``apply_act=False`` gives the affine-only form. Shape: (N, C, *spatial) -> same.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, groups: int = 32,
                 apply_act: bool = True):
        super().__init__()
        if num_features < 1 or groups < 1:
            raise ValueError(f"num_features and groups must be positive, got {{num_features}} and {{groups}}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.groups = max(g for g in range(1, min(groups, num_features) + 1) if num_features % g == 0)
        self.apply_act = apply_act
        self.weight = nn.Parameter(torch.empty(num_features))
        self.bias = nn.Parameter(torch.empty(num_features))
        {init}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)
            {reset}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError("expected input of shape (N, " + str(self.num_features) + ", *spatial)")
        shape = [1, -1] + [1 for _ in range(x.dim() - 2)]
        weight = self.weight.to(x.dtype).reshape(shape)
        if self.apply_act:
            {body}
        return (x * weight).add_(self.bias.to(x.dtype).reshape(shape))

    def extra_repr(self) -> str:
        return (f"{{self.num_features}}, eps={{self.eps}}, momentum={{self.momentum}}, groups={{self.groups}}, "
                f"apply_act={{self.apply_act}}")
'''
