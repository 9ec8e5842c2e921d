"""Gunicorn settings; each can be overridden with the usual GUNICORN_* / command-line options."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = 10_000
max_requests_jitter = 1_000
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# Prometheus multiprocess mode (marketplace/metrics.py): with PROMETHEUS_MULTIPROC_DIR set,
# every worker writes its metrics to files there and /metrics adds them up. The directory is
# emptied when gunicorn starts, and a worker that exits is marked dead so that its gauges stop
# counting.
def on_starting(server):
    from marketplace.metrics import clear_multiprocess_dir

    clear_multiprocess_dir()


def child_exit(server, worker):
    from marketplace.metrics import worker_exited

    worker_exited(worker.pid)


# The search backend loads what it keeps in memory before the worker takes requests, so no
# visitor waits for it (workers restart after max_requests, and each one loads afresh).
def post_worker_init(worker):
    from marketplace.catalog.search import warm_up

    warm_up(worker.wsgi)
