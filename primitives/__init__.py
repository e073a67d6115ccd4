"""The op vocabulary and the graph DSL: validate, print, hash, save/load and compile candidate layers."""
from .codegen import layer_source
from .compile import GraphLayer, compile_graph
from .generate import OPERATORS, PRIORS, mutate, random_graph, viable
from .graph import INPUTS, GraphError, LayerGraph
from .io import GraphFormatError, graph_from_dict, graph_from_yaml, graph_to_yaml, load_graph, save_graph
from .ops import OPS, PAPER_OPS, S_SERIES_OPS, Op, get_op, register_op
from .stats import resolve_groups
from . import seeds

__all__ = [
    "GraphLayer", "compile_graph", "layer_source", "OPERATORS", "PRIORS", "mutate", "random_graph", "viable",
    "INPUTS", "GraphError", "LayerGraph",
    "GraphFormatError", "graph_from_dict", "graph_from_yaml", "graph_to_yaml", "load_graph", "save_graph",
    "OPS", "PAPER_OPS", "S_SERIES_OPS", "Op", "get_op", "register_op", "resolve_groups", "seeds",
]
