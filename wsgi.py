"""Gunicorn entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

import sys

from marketplace import create_app
from marketplace.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"marketplace: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None
