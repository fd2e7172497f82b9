import pytest
from prefect.testing.utilities import prefect_test_harness

from flows.server import startup_limit_s


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (its own SQLite database) for every flow test of the session, given the start-up
    limit of the local commands (flows.server: 180 s unless set), which a 2-core machine under load needs."""
    with prefect_test_harness(server_startup_timeout=int(startup_limit_s())):
        yield
