"""The app served by real gunicorn for tests that need real worker processes (crash safety,
dependency outages): started on 127.0.0.1 on a free port over a given database, each call on a
fresh connection, and gunicorn's workers found so that a test can kill one."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    log: IO[bytes]

    def log_tail(self, size: int = 2000) -> str:
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - size))
        return self.log.read().decode(errors="replace")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Any, dict[str, str]]:
        """One request on its own connection: (status, parsed JSON body or None, headers).
        Raises ``OSError``/``http.client.HTTPException`` when the worker dies under it."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(
                method,
                path,
                body=None if body is None else json.dumps(body),
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, dict(response.getheaders())
        finally:
            connection.close()

    def workers(self) -> list[int]:
        """The pids of gunicorn's live workers (the master's children)."""
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                children.append(int(entry.name))
        return sorted(children)

    def wait_for_workers(self, count: int, timeout: float = 60) -> list[int]:
        """Wait until ``count`` workers run and answer; returns their pids."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) >= count and self.healthy():
                return pids
            time.sleep(0.2)
        raise AssertionError(f"gunicorn did not get back to {count} workers in {timeout} s")

    def healthy(self) -> bool:
        try:
            return self.call("GET", "/healthz", timeout=5)[0] == 200
        except (OSError, http.client.HTTPException):
            return False


@contextmanager
def gunicorn(
    database_url: str, *, workers: int = 2, preload: bool = False, **env: str
) -> Iterator[Served]:
    """gunicorn (``gunicorn.conf.py``, sync workers) serving ``wsgi:app`` over the database.
    ``preload``: the master builds the app once and forks workers from it, so a worker that
    dies is replaced in milliseconds (the app opens no connection before the fork)."""
    port = free_port()
    environment = os.environ | {
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "WARNING",
        "WEB_CONCURRENCY": str(workers),
        "RATE_LIMIT_ENABLED": "false",  # what these servers test is not the limits
        **env,
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
        *("--access-logfile", "/dev/null", *(["--preload"] if preload else []), "wsgi:app"),
    ]
    # gunicorn's and the app's log go to a file: a pipe nobody reads could fill and block it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        served = Served(process, port, log)
        try:
            deadline = time.monotonic() + 60
            while not served.healthy():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start: {served.log_tail()}")
                time.sleep(0.2)
            yield served
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGQUIT)  # gunicorn's quick shutdown
                try:
                    process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    # Its workers can take seconds to go; they hold nothing a test needs.
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
