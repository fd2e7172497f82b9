import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (its own SQLite database) for every flow test of the session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield
