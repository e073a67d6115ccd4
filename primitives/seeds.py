"""The known-good EvoNorm layers as graphs of the DSL: seeds for a search and references for its results.

Data of the DSL, kept here so that the evaluator and the search read them without importing ``evonorm``'s
layers and kernels; ``evonorm.seeds`` re-exports it.

``compile_graph(get("evonorm_s0"), C)`` computes what ``evonorm.EvoNorm2dS0(C)`` computes (the graph calls
the layer's ``v`` ``v1``). B1's constant 1 is written ``exp(zero)``, which is exactly 1.
"""
from __future__ import annotations

from .graph import LayerGraph

__all__ = ["get", "names", "SEEDS"]

SEEDS: dict[str, list[tuple[str, str, list[str]]]] = {
    # x / max(sqrt(batch_var + eps), v * x + sqrt(instance_var + eps))
    "evonorm_b0": [
        ("batch_std", "std_batch", ["x"]),
        ("vx", "mul", ["v1", "x"]),
        ("instance_std", "std_instance", ["x"]),
        ("right", "add", ["vx", "instance_std"]),
        ("den", "max", ["batch_std", "right"]),
        ("out", "div", ["x", "den"]),
    ],
    # x / max(sqrt(batch_var + eps), (x + 1) * instance_rms)
    "evonorm_b1": [
        ("batch_std", "std_batch", ["x"]),
        ("one", "exp", ["zero"]),
        ("x_plus_1", "add", ["x", "one"]),
        ("instance_rms", "rms_instance", ["x"]),
        ("right", "mul", ["x_plus_1", "instance_rms"]),
        ("den", "max", ["batch_std", "right"]),
        ("out", "div", ["x", "den"]),
    ],
    # x / max(sqrt(batch_var + eps), instance_rms - x)
    "evonorm_b2": [
        ("batch_std", "std_batch", ["x"]),
        ("instance_rms", "rms_instance", ["x"]),
        ("minus_x", "neg", ["x"]),
        ("right", "add", ["instance_rms", "minus_x"]),
        ("den", "max", ["batch_std", "right"]),
        ("out", "div", ["x", "den"]),
    ],
    # x * sigmoid(v * x) / group_std
    "evonorm_s0": [
        ("vx", "mul", ["v1", "x"]),
        ("gate", "sigmoid", ["vx"]),
        ("num", "mul", ["x", "gate"]),
        ("group_std", "std_group", ["x"]),
        ("out", "div", ["num", "group_std"]),
    ],
    # x * sigmoid(x) / group_std
    "evonorm_s1": [
        ("gate", "sigmoid", ["x"]),
        ("num", "mul", ["x", "gate"]),
        ("group_std", "std_group", ["x"]),
        ("out", "div", ["num", "group_std"]),
    ],
    # x * sigmoid(x) / group_rms
    "evonorm_s2": [
        ("gate", "sigmoid", ["x"]),
        ("num", "mul", ["x", "gate"]),
        ("group_rms", "rms_group", ["x"]),
        ("out", "div", ["num", "group_rms"]),
    ],
}


def names() -> list[str]:
    return list(SEEDS)


def get(name: str) -> LayerGraph:
    """The seed graph called ``name`` (``evonorm_s0``, or just ``s0``; case ignored)."""
    key = name.strip().lower().replace("-", "_")
    key = key if key.startswith("evonorm_") else f"evonorm_{key}"
    if key not in SEEDS:
        raise ValueError(f"unknown seed graph {name!r}; known seeds: {', '.join(SEEDS)}")
    return LayerGraph.from_nodes(SEEDS[key], name=key)
