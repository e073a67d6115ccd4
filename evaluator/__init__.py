"""Turn one candidate graph into fitness on proxy CIFAR-10 networks.

``Evaluator(cfg).evaluate(layer, seed) -> EvalRecord`` (the data loaded once per ``Evaluator``), or
``evaluate(layer, cfg, seed)``; ``fingerprint(layer, groups, eps, momentum)`` for deduplication before
dispatch; ``load_config`` for configs. The command line is ``python -m evaluator``.
"""
from .config import DEFAULTS, ConfigError, load_config
from .data import DataError
from .evaluate import REASONS, EvalRecord, Status, Evaluator, evaluate
from .fingerprint import fingerprint

__all__ = ["DEFAULTS", "ConfigError", "load_config", "DataError", "REASONS", "Status", "EvalRecord",
           "Evaluator", "evaluate", "fingerprint"]
