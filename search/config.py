"""The search's config sections (``search``, ``executor``) over the evaluator's, and how a run's config is found.

A search config is one YAML file holding every section; ``load_config`` validates all of it before anything
runs, so a typo, a wrong type or an impossible value stops the program with the key and the file named.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from evaluator import config as evaluator_config
from evaluator.config import ConfigError
from evaluator.models import REFERENCES as REFERENCE_LAYERS
from primitives import seeds as seed_graphs
from primitives import OPERATORS, PAPER_OPS, PRIORS, S_SERIES_OPS, get_op

from .plugins import import_plugins, is_module_list
from .seed_graphs import freeze_seeds, is_seed_list

__all__ = ["SEARCH_DEFAULTS", "SEARCH_CHECKS", "OP_SETS", "OBJECTIVES", "RESUMABLE_KEYS", "ConfigError",
           "load_config", "resolve_ops", "find_config", "check_resume_overrides"]

# What the tournament and the ranking maximise: the per-architecture accuracies, and with `cost` the layer's
# forward+backward cost relative to BN-ReLU (primitives.cost), minimised. Random search ignores them.
OBJECTIVES = ("accuracy", "cost")
# Named op sets usable in `search.ops` beside single op names.
OP_SETS: dict[str, tuple[str, ...]] = {"paper": PAPER_OPS, "s_series": S_SERIES_OPS}

SEARCH_DEFAULTS: dict[str, Any] = {
    "search": {
        "algorithm": "evolution",   # evolution | random
        # budgets; the run stops cleanly at the first one reached (0: no limit, but set at least one)
        "max_evaluations": 100,     # candidates sent to the evaluator; references and duplicates not counted
        "max_time": 0.0,            # seconds of wall-clock time, summed over resumed sessions
        "max_steps": 0,             # training steps summed over evaluations (the journal's `steps`)
        "population_size": 20,      # distinct passing members; mutation starts once it is full
        "tournament_size": 5,
        "max_initial": 0,           # random proposals after which a partial population is mutated (0: no cap)
        "num_nodes": 10,            # intermediate nodes of a random graph
        "max_nodes": 20,            # the most intermediate nodes a child may grow to
        # the paper's generators by default, so that a run's config means what it meant when it was written;
        # the shipped configs choose the structural ones (README, "How the search proposes candidates")
        "prior": "uniform",         # random graphs: uniform (the paper's) | structural (typed, viable output)
        "mutation": "paper",        # paper (any node redrawn) | structural (live nodes, insertions)
        "mutation_nodes": 1,        # mutations per child (the paper: 1)
        "common_random_numbers": False,  # every candidate trains with the same initialisation and data order
        "stages": 1,                # progressive hurdles (search/hurdles.py): the most stages a candidate trains
        "hurdle": 0.5,              # ...the population's quantile its mean accuracy must reach for the next one
        "ops": ["paper"],           # op names and/or op sets: paper (all), s_series (no batch statistics)
        "objectives": ["accuracy"],  # [accuracy, cost]: the cost (primitives.cost) joins tournament and ranking
        "plugins": [],              # modules imported first, on the driver and every worker (search/plugins.py)
        "seeds": [],                # seed graphs that open the initial population (search/seed_graphs.py): names
                                    # (evonorm_b0 ... evonorm_s2), graph YAML files, RUN_DIR#topK
        "references": ["bn_relu", "evonorm_s0"],  # evaluated in the run for comparison; never population members
        "backup_every": 20,         # results between two backups of the journal (also one at every stop); 0: stops only
    },
    "logging": {
        "tensorboard": False,       # events under RUN_DIR/tensorboard/ (search/tensorboard.py; needs the extra)
    },
    "executor": {
        "kind": "ray",              # ray | serial (in-process, one at a time, fully deterministic)
        "address": None,            # Ray cluster to join (e.g. auto, ray://head:10001); null starts a local one
        "num_workers": 0,           # evaluator actors; 0: as many as the resources per evaluation allow
        "cpus_per_eval": 1.0,
        "gpus_per_eval": 0.0,       # fractional GPUs per evaluation, e.g. 0.25 runs four on one GPU
        "max_retries": 2,           # re-runs of an evaluation whose worker died, before it is recorded failed
        "hard_timeout": 0.0,        # seconds before a hung evaluation's worker is killed; 0: 2*time_limit + 60
        "object_store_mb": 256,     # object store of a local Ray instance, at least twice the dataset's size
        "runtime_env": None,        # Ray runtime_env for the workers (working_dir, py_modules, pip, env_vars)
    },
}


def _names_in(valid: Iterable[str]):
    valid = tuple(valid)
    return lambda v: all(n in valid for n in v) and len(set(v)) == len(v)


def _is_op_or_set(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        return name in OP_SETS or get_op(name) is not None
    except ValueError:
        return False


SEARCH_CHECKS: dict[str, tuple[Any, str]] = {
    "search.algorithm": (lambda v: v in ("evolution", "random"), "evolution or random"),
    "search.max_evaluations": (lambda v: v >= 0, "0 (no limit) or a positive count"),
    "search.max_time": (lambda v: v >= 0, "0 (no limit) or positive seconds"),
    "search.max_steps": (lambda v: v >= 0, "0 (no limit) or a positive number of steps"),
    "search.backup_every": (lambda v: v >= 0, "0 (a backup at each stop only) or a positive number of results"),
    "search.population_size": (lambda v: v >= 1, "at least 1"),
    "search.tournament_size": (lambda v: v >= 1, "at least 1"),
    "search.max_initial": (lambda v: v >= 0, "0 (no cap) or a positive count"),
    "search.num_nodes": (lambda v: v >= 1, "at least 1"),
    "search.max_nodes": (lambda v: v >= 1, "at least 1"),
    "search.prior": (lambda v: v in PRIORS, " or ".join(PRIORS)),
    "search.mutation": (lambda v: v in OPERATORS, " or ".join(OPERATORS)),
    "search.mutation_nodes": (lambda v: v >= 1, "at least 1"),
    "search.stages": (lambda v: v >= 1, "at least 1 (1: no hurdles)"),
    "search.hurdle": (lambda v: 0.0 <= v <= 1.0, "a quantile between 0 and 1 (0.5: the population's median)"),
    "search.ops": (lambda v: bool(v) and all(_is_op_or_set(n) for n in v),
                   f"a non-empty list of op names or op sets {list(OP_SETS)}"),
    "search.objectives": (lambda v: _names_in(OBJECTIVES)(v) and "accuracy" in v,
                          f"a list of distinct objectives from {list(OBJECTIVES)}, accuracy among them"),
    "search.plugins": (is_module_list, "a list of distinct module names (on sys.path or in the current directory)"),
    "search.seeds": (is_seed_list, f"a list of distinct seed graphs: names from {seed_graphs.names()}, graph YAML "
                                   "files, RUN_DIR#topK (a run's K best) or graph documents"),
    "search.references": (_names_in(REFERENCE_LAYERS + tuple(seed_graphs.names())),
                          f"a list of distinct names from {list(REFERENCE_LAYERS) + seed_graphs.names()}"),
    "executor.kind": (lambda v: v in ("ray", "serial"), "ray or serial"),
    "executor.address": (lambda v: v is None or (isinstance(v, str) and bool(v)), "a Ray address string or null"),
    "executor.num_workers": (lambda v: v >= 0, "0 (automatic) or a positive count"),
    "executor.cpus_per_eval": (lambda v: v > 0, "positive"),
    "executor.gpus_per_eval": (lambda v: v >= 0, "0 or a positive (possibly fractional) GPU count"),
    "executor.max_retries": (lambda v: v >= 0, "0 or a positive count"),
    "executor.hard_timeout": (lambda v: v >= 0, "0 (automatic) or positive seconds"),
    "executor.object_store_mb": (lambda v: v >= 80, "at least 80 (Ray's minimum)"),
    "executor.runtime_env": (lambda v: v is None or (isinstance(v, Mapping) and all(isinstance(k, str) for k in v)),
                             "null or a mapping of Ray runtime_env fields (working_dir, py_modules, pip, env_vars, ...)"),
}

# Keys a resumed run may change: budgets, where the data lives and how evaluations are executed.
# Everything else fixes the evolution's state and must stay as the run began.
RESUMABLE_KEYS = ("search.max_evaluations", "search.max_time", "search.max_steps", "search.backup_every", "data.root",
                  "data.download", "executor.*", "logging.*")


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = (),
                check_search: bool = True) -> dict[str, Any]:
    """The full config (evaluator and search sections), validated; raises ``ConfigError`` naming key and file.

    ``check_search=False`` skips the checks that only a search needs (its budgets and population, a
    validation split), for programs that reuse a run's config for other work (``search.rerank``).
    """
    overrides = list(overrides)
    defaults = evaluator_config.merge(evaluator_config.DEFAULTS, SEARCH_DEFAULTS)
    checks = {**evaluator_config.CHECKS, **SEARCH_CHECKS}
    ops_check = checks.pop("search.ops")  # it reads the op registry, to which search.plugins may add
    cfg = evaluator_config.load_config(path, overrides, defaults=defaults, checks=checks)
    source = os.fspath(path) if path is not None else "<defaults>"
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    s = cfg["search"]
    import_plugins(s["plugins"], source)
    if not ops_check[0](s["ops"]):
        raise ConfigError(f"{source}: 'search.ops' must be {ops_check[1]}, got {s['ops']!r}")
    s["seeds"] = freeze_seeds(s["seeds"], source, s["plugins"])  # files and runs read once, when a run starts
    if check_search:
        _check_search(cfg, source)
    if cfg["executor"]["gpus_per_eval"] > 0 and cfg["train"]["device"] == "cpu":
        raise ConfigError(f"{source}: 'executor.gpus_per_eval' is {cfg['executor']['gpus_per_eval']} but "
                          "train.device is cpu; set train.device to auto or cuda")
    return cfg


def _check_search(cfg: Mapping[str, Any], source: str) -> None:
    s = cfg["search"]
    if s["tournament_size"] > s["population_size"]:
        raise ConfigError(f"{source}: 'search.tournament_size' must not exceed search.population_size="
                          f"{s['population_size']}, got {s['tournament_size']}")
    if s["max_nodes"] < s["num_nodes"]:
        raise ConfigError(f"{source}: 'search.max_nodes' must be at least search.num_nodes={s['num_nodes']}, "
                          f"got {s['max_nodes']}")
    if not (s["max_evaluations"] or s["max_time"] or s["max_steps"]):
        raise ConfigError(f"{source}: 'search.max_evaluations', 'search.max_time' and 'search.max_steps' are all "
                          "0 (no limit); set at least one budget")
    if not cfg["data"]["val_size"]:
        raise ConfigError(f"{source}: 'data.val_size' is 0, but the search's fitness is the validation "
                          "accuracy; hold out some training images")


def check_resume_overrides(overrides: Iterable[str], run_dir: str | os.PathLike) -> None:
    """Refuse overrides that would change a resumed run's evolution, naming the key."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not any(key == k or (k.endswith("*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS):
            raise ConfigError(f"--set {item}: '{key}' cannot change when resuming {os.fspath(run_dir)!r}; "
                              f"a resumed run may change only {', '.join(RESUMABLE_KEYS)}")


def resolve_ops(names: Iterable[str]) -> tuple[str, ...]:
    """The op set named by ``search.ops``: op names and op sets, expanded, duplicates dropped, order kept."""
    out: dict[str, None] = {}
    for name in names:
        for op in OP_SETS.get(name, (name,)):
            out[get_op(op).name] = None
    return tuple(out)


def find_config(name: str | os.PathLike) -> Path:
    """A config file: a path as given, else one shipped with the package (``quick`` or ``quick.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = resources.files("search") / "configs"
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    candidate = shipped / stem
    if len(path.parts) == 1 and candidate.is_file():
        return Path(str(candidate))
    available = sorted(p.name for p in shipped.iterdir() if p.name.endswith(".yaml")) if shipped.is_dir() else []
    raise ConfigError(f"config file {os.fspath(name)!r} not found (shipped configs: {', '.join(available) or 'none'})")
