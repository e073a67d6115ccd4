"""A Ray instance shared by the tests that need one, started once per test session."""
import os

import pytest

import tests.search.fakes as fakes


@pytest.fixture(scope="session")
def ray_session():
    """Local Ray: 2 CPUs, no dashboard, a small object store; the fake evaluator travels by value."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    from search.executor import local_ray_options

    ray.init(address="local", num_cpus=2, **local_ray_options(100), logging_level="WARNING", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(fakes)
    yield ray
    ray.shutdown()
