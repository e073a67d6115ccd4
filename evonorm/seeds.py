"""The seed graphs, re-exported: they are DSL data and live in ``primitives.seeds``."""
from primitives.seeds import SEEDS, get, names

__all__ = ["get", "names", "SEEDS"]
