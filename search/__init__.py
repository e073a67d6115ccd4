"""Evolutionary search for normalization-activation layers: the loop, its journal, its executors.

``run(config)`` runs a search into a run directory, ``resume(run_dir)`` continues an interrupted one, and
``open_run(run_dir)`` reads one (read-only, also while it runs). The command line is ``run_search.py`` (or the
``evonorm-search`` console script, or ``python -m search``); ``python -m search.inspect`` shows a run, and
``python -m search.rerank`` retrains its top candidates with more steps and seeds.
"""
from .callbacks import Callback
from .config import ConfigError, load_config
from .results import RunResult, RunSummary, RunView, open_run
from .driver import resume, run

__all__ = ["run", "resume", "open_run", "load_config", "ConfigError", "RunResult", "RunSummary", "RunView",
           "Callback"]
