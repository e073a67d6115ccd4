"""Shared test setup: a derandomised hypothesis profile and the location of the real CIFAR-10 subset."""
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Every Ray instance the tests start stays on this machine's loopback address (search.executor): set before
# any test module imports Ray, which reads it then.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

settings.register_profile("project", deadline=None, derandomize=True, max_examples=40, print_blob=True)
settings.load_profile("project")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """The directory holding ``cifar-10-batches-py``: $EVONORM_DATA, else ../shared/data beside the repo.

    Missing data skips locally but fails under CI, where it must be present.
    """
    root = Path(os.environ.get("EVONORM_DATA", REPO.parent / "shared" / "data"))
    if not (root / "cifar-10-batches-py").is_dir():
        message = f"real CIFAR-10 subset not found under {root} (set EVONORM_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root
