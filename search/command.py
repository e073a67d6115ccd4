"""What the search's command lines share: their logging, and how an error becomes an exit status."""
from __future__ import annotations

import logging
import sys

from evaluator.data import DataError

from .config import ConfigError
from .executor import ExecutorError
from .journal import JournalError, JournalWriteError
from .runlock import RunLockedError

__all__ = ["USAGE_ERRORS", "RESOURCE_ERRORS", "setup_logging", "report_error"]

# Exit status 2: the command line, a config or a run directory is wrong, or another driver holds the run (the
# message says which).
USAGE_ERRORS = (ConfigError, JournalError, RunLockedError)
# Exit status 1: the data, the workers or the disk cannot be used.
RESOURCE_ERRORS = (DataError, ExecutorError, JournalWriteError)


def setup_logging(quiet: bool) -> None:
    """INFO (warnings only with ``quiet``) on stderr; the evaluator's per-candidate lines stay quiet, since
    reporting each candidate is the command's job."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("evaluator").setLevel(logging.WARNING)


def report_error(err: Exception) -> int:
    """Print ``err`` for the user and return the exit status: 1 for unusable data or workers, else 2."""
    print(f"error: {err}", file=sys.stderr)
    return 1 if isinstance(err, RESOURCE_ERRORS) else 2
