"""/metrics under gunicorn with several workers (prometheus_client's multiprocess mode).

Workers are recycled every few requests (``--max-requests``), so the figures of workers that
have exited must still be counted, and their live gauges must not be.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "gunicorn-scrape-" + "t" * 24
REQUESTS = 12
MAX_REQUESTS = 4  # per worker, then gunicorn replaces it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def gunicorn(migrated, tmp_path):
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"from an earlier run")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "WEB_"))} | {
        "DATABASE_URL": migrated.database_url,
        "MARKETPLACE_INSTANCE_DIR": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "METRICS_TOKEN": TOKEN,
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    command = [
        sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
        "--workers", "2", "--preload", "--max-requests", str(MAX_REQUESTS),
        "--max-requests-jitter", "0", "wsgi:app",
    ]  # fmt: skip
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.2)
        yield server, port, multiproc
    finally:
        server.send_signal(signal.SIGQUIT)  # quick shutdown
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _healthz_count(body: str) -> float:
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if (
                sample.name == "marketplace_http_requests_total"
                and sample.labels["endpoint"] == "ops.healthz"
            ):
                return sample.value
    return 0.0


def _pids(directory: Path, pattern: str) -> set[int]:
    return {int(m.group(1)) for f in directory.iterdir() if (m := re.fullmatch(pattern, f.name))}


def test_every_worker_is_counted_and_dead_workers_gauges_are_dropped(gunicorn):
    server, port, multiproc = gunicorn
    assert _get(port, "/metrics")[0] == 401
    for _ in range(REQUESTS):
        assert _get(port, "/healthz")[0] == 200
    scrape = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(3):  # whichever worker answers, it answers for all of them
        status, body = _get(port, "/metrics", scrape)
        assert status == 200
        assert _healthz_count(body) == REQUESTS
        assert "marketplace_search_outbox_pending" in body

    assert not (multiproc / "counter_999999.db").exists()  # emptied at start
    # Each worker served at most MAX_REQUESTS: counters of replaced workers are still read...
    assert len(_pids(multiproc, r"counter_(\d+)\.db")) >= REQUESTS // MAX_REQUESTS
    # ...but the live gauges of exited workers were removed (gunicorn's child_exit hook).
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    alive = {server.pid, *map(int, children)}
    assert _pids(multiproc, r"gauge_livesum_(\d+)\.db") <= alive
