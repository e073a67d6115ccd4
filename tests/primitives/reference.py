"""An independent float64 numpy interpreter of the DSL, written from the op definitions, for parity tests."""
import numpy as np

from primitives import INPUTS, LayerGraph


def _groups(c, g):
    g = min(g, c)
    while c % g:
        g -= 1
    return g


def _aggregate(a, axes, stat, groups, eps, running=None):
    n, c = a.shape[:2]
    spatial = tuple(range(2, a.ndim))
    if axes == "group":
        g = _groups(c, groups)
        r = a.reshape((n, g, c // g) + a.shape[2:])
        dims = tuple(range(2, r.ndim))
    else:
        r = a
        dims = {"batch": (0,) + spatial, "layer": (1,) + spatial, "instance": spatial}[axes]
    if not dims:  # instance statistics of an (N, C) tensor: each value is its own instance
        r = r[..., None]
        dims = (r.ndim - 1,)
    if running is not None:
        m = running.reshape((1, c) + (1,) * len(spatial))
    elif stat == "mean":
        m = r.mean(axis=dims, keepdims=True)
    elif stat == "std":
        m = ((r - r.mean(axis=dims, keepdims=True)) ** 2).mean(axis=dims, keepdims=True)
    else:
        m = (r * r).mean(axis=dims, keepdims=True)
    out = m if stat == "mean" else np.sqrt(m + eps)
    out = np.broadcast_to(out, r.shape).reshape(a.shape) if axes == "group" else out
    return np.broadcast_to(out[..., 0] if out.ndim > a.ndim else out, a.shape)


_UNARY = {
    "neg": np.negative, "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "tanh": np.tanh, "exp": np.exp,
    "log": lambda a: np.where(a == 0, 0.0, np.sign(a) * np.log(np.abs(np.where(a == 0, 1.0, a)))),
    "abs": np.abs, "square": np.square, "sqrt": lambda a: np.sign(a) * np.sqrt(np.abs(a)),
}
_BINARY = {"add": np.add, "mul": np.multiply, "div": np.divide, "max": np.maximum}


def run_graph(graph: LayerGraph, x, params, groups=32, eps=1e-5, running=None, apply_act=True):
    """Evaluate ``graph`` on numpy ``x``; ``params`` has weight, bias, v0, v1 as (C,) arrays;
    ``running`` maps node id -> running moment (eval mode) for batch aggregates."""
    c = x.shape[1]
    shape = (1, c) + (1,) * (x.ndim - 2)
    values = {"x": x, "zero": np.zeros_like(x), "v0": np.broadcast_to(params["v0"].reshape(shape), x.shape),
              "v1": np.broadcast_to(params["v1"].reshape(shape), x.shape)}
    assert set(values) == set(INPUTS)
    out = x
    if apply_act:
        with np.errstate(all="ignore"):
            for node in graph.intermediate:  # dead nodes too: they must not matter
                op, args = graph.op(node), [values[s] for s in graph.inputs(node)]
                if op in _UNARY:
                    values[node] = _UNARY[op](*args)
                elif op in _BINARY:
                    values[node] = _BINARY[op](*args)
                else:
                    stat, axes = op.split("_")
                    r = None if running is None or axes != "batch" else running[node]
                    values[node] = _aggregate(np.broadcast_to(args[0], x.shape), axes, stat, groups, eps, r)
            out = np.broadcast_to(values[graph.output], x.shape)
    return out * params["weight"].reshape(shape) + params["bias"].reshape(shape)
