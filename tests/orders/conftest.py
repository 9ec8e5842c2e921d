"""A real Stripe-compatible server for payment tests: localstripe on 127.0.0.1, a free port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

LAUNCH = (
    "import sys; from aiohttp import web; from localstripe.server import app; "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    pytest.importorskip(
        "localstripe", reason="localstripe is not installed (pip install -e '.[test]')"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"localstripe did not start: {process.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("localstripe did not start within 15 s")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
