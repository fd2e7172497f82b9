"""The Prefect API of local commands: a configured server is used as is; a temporary one starts within a limit that
fits a loaded machine and dies with the command, even when the command is killed (SIGKILL)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import STARTUP_LIMIT_ENV
from flows.server import prefect_api, startup_limit_s

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_startup_limit_fits_a_loaded_machine_unless_the_user_set_one(monkeypatch):
    assert float(os.environ[STARTUP_LIMIT_ENV]) >= 120  # set when flows is imported, before Prefect reads it
    monkeypatch.setenv(STARTUP_LIMIT_ENV, "45")
    assert startup_limit_s() == 45
    monkeypatch.setenv(STARTUP_LIMIT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{STARTUP_LIMIT_ENV}='soon'"):
        startup_limit_s()


def test_a_configured_server_is_used_as_is(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    with prefect_api() as url:
        assert url == "http://127.0.0.1:1/api"


def test_the_temporary_server_dies_with_a_killed_command(work_home, tmp_path):
    env = {**os.environ, "SQLCOPILOT_HOME": str(work_home), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    script = ("import sys, time\nfrom flows.server import prefect_api\nwith prefect_api() as url:\n"
              "    print(url, flush=True)\n    time.sleep(600)\n")
    command = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        url = command.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert listening(port)
        command.send_signal(signal.SIGKILL)  # the command only, not its process group
        command.wait()
        deadline = time.monotonic() + 15
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not listening(port), "the temporary server outlived its killed command"
    finally:
        try:  # whatever is left of the process group this test started
            os.killpg(command.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
