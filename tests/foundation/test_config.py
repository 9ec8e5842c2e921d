"""Settings: defaults, every variable, and a clear one-line failure for each bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from marketplace import create_app
from marketplace.config import ConfigError, from_env

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_use_an_embedded_sqlite_file_in_the_instance_folder(tmp_path):
    settings = from_env({"MARKETPLACE_INSTANCE_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path / 'marketplace.sqlite3'}"
    assert settings.search_backend == "sql"
    assert settings.elasticsearch_url is None
    assert settings.stripe_api_key is None
    assert settings.log_level == "INFO"
    assert settings.search_cache_size == 1024
    assert settings.search_cache_mb == 64


def test_every_setting_is_read(tmp_path):
    settings = from_env(
        {
            "DATABASE_URL": "postgresql://app@db.internal:5433/marketplace",
            "SEARCH_BACKEND": "elasticsearch",
            "ELASTICSEARCH_URL": "https://search.internal:9200/",
            "ELASTICSEARCH_INDEX": "products",
            "SEARCH_CACHE_SIZE": "0",
            "SEARCH_CACHE_MB": "8",
            "STRIPE_API_KEY": "sk_test_123",
            "STRIPE_API_BASE": "http://127.0.0.1:8420",
            "STRIPE_WEBHOOK_SECRET": "whsec_abc",
            "LOG_LEVEL": "debug",
            "MAX_CONTENT_LENGTH": "2048",
            "SQLITE_BUSY_TIMEOUT_MS": "100",
            "PUBLIC_BASE_URL": "https://marketplace.example",
            "MARKETPLACE_INSTANCE_DIR": str(tmp_path),
        }
    )
    assert settings.database_url == "postgresql+psycopg://app@db.internal:5433/marketplace"
    assert settings.search_backend == "elasticsearch"
    assert settings.elasticsearch_url == "https://search.internal:9200"
    assert settings.elasticsearch_index == "products"
    assert settings.search_cache_size == 0
    assert settings.search_cache_mb == 8
    assert settings.stripe_api_key == "sk_test_123"
    assert settings.stripe_api_base == "http://127.0.0.1:8420"
    assert settings.stripe_webhook_secret == "whsec_abc"
    assert settings.log_level == "DEBUG"
    assert settings.max_content_length == 2048
    assert settings.sqlite_busy_timeout_ms == 100
    assert settings.public_base_url == "https://marketplace.example"


def test_abuse_limit_and_metrics_settings_are_read():
    defaults = from_env({})
    assert defaults.rate_limit_enabled is True
    assert defaults.redis_url is None
    assert defaults.trusted_proxy_count == 0
    assert defaults.metrics_token is None
    secret = "m" * 32
    settings = from_env(
        {
            "RATE_LIMIT_ENABLED": "false",
            "RATE_LIMIT_AUTHENTICATED": "100/minute;10/second",
            "RATE_LIMIT_ANONYMOUS": "50 per minute",
            "RATE_LIMIT_WRITE": "20 per minute",
            "RATE_LIMIT_IMPORT": "5 per hour",
            "RATE_LIMIT_AUTH_FAILURES": "10 per minute",
            "RATE_LIMIT_STRATEGY": "moving-window",
            "RATE_LIMIT_KEY_PREFIX": "mkt-prod",
            "REDIS_URL": "redis://cache.internal:6379/2",
            "TRUSTED_PROXY_COUNT": "2",
            "METRICS_TOKEN": secret,
        }
    )
    assert settings.rate_limit_enabled is False
    assert settings.rate_limit_authenticated == "100/minute;10/second"
    assert settings.rate_limit_anonymous == "50 per minute"
    assert settings.rate_limit_write == "20 per minute"
    assert settings.rate_limit_import == "5 per hour"
    assert settings.rate_limit_auth_failures == "10 per minute"
    assert settings.rate_limit_strategy == "moving-window"
    assert settings.rate_limit_key_prefix == "mkt-prod"
    assert settings.redis_url == "redis://cache.internal:6379/2"
    assert settings.trusted_proxy_count == 2
    assert settings.metrics_token == secret
    assert secret not in repr(settings)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"SEARCH_BACKEND": "solr"}, "SEARCH_BACKEND"),
        ({"SEARCH_BACKEND": "elasticsearch"}, "ELASTICSEARCH_URL"),
        ({"ELASTICSEARCH_URL": "ftp://x"}, "ELASTICSEARCH_URL"),
        ({"SEARCH_CACHE_SIZE": "-1"}, "SEARCH_CACHE_SIZE"),
        ({"SEARCH_CACHE_SIZE": "lots"}, "SEARCH_CACHE_SIZE"),
        ({"SEARCH_CACHE_MB": "-1"}, "SEARCH_CACHE_MB"),
        ({"STRIPE_API_KEY": "pk_live_123"}, "STRIPE_API_KEY"),
        ({"STRIPE_API_BASE": "localhost:8420"}, "STRIPE_API_BASE"),
        ({"STRIPE_WEBHOOK_SECRET": "secret"}, "STRIPE_WEBHOOK_SECRET"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"MAX_CONTENT_LENGTH": "lots"}, "MAX_CONTENT_LENGTH"),
        ({"MAX_CONTENT_LENGTH": "10"}, "MAX_CONTENT_LENGTH"),
        ({"SQLITE_BUSY_TIMEOUT_MS": "-1"}, "SQLITE_BUSY_TIMEOUT_MS"),
        ({"RATE_LIMIT_ENABLED": "maybe"}, "RATE_LIMIT_ENABLED"),
        ({"RATE_LIMIT_AUTHENTICATED": "lots"}, "RATE_LIMIT_AUTHENTICATED"),
        ({"RATE_LIMIT_ANONYMOUS": "100 per fortnight"}, "RATE_LIMIT_ANONYMOUS"),
        ({"RATE_LIMIT_WRITE": "-5/minute"}, "RATE_LIMIT_WRITE"),
        ({"RATE_LIMIT_IMPORT": "10"}, "RATE_LIMIT_IMPORT"),
        ({"RATE_LIMIT_AUTH_FAILURES": "per minute"}, "RATE_LIMIT_AUTH_FAILURES"),
        ({"RATE_LIMIT_STRATEGY": "leaky-bucket"}, "RATE_LIMIT_STRATEGY"),
        ({"RATE_LIMIT_KEY_PREFIX": "has spaces"}, "RATE_LIMIT_KEY_PREFIX"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"TRUSTED_PROXY_COUNT": "one"}, "TRUSTED_PROXY_COUNT"),
        ({"TRUSTED_PROXY_COUNT": "-1"}, "TRUSTED_PROXY_COUNT"),
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
    ],
)
def test_a_bad_setting_names_the_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        from_env(env)
    assert raised.value.variable == variable
    message = str(raised.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_app_starts_from_the_factory_with_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("MARKETPLACE_INSTANCE_DIR", str(tmp_path))
    app = create_app()
    assert app.extensions["marketplace"].settings.is_sqlite
    assert app.test_client().get("/healthz").get_json() == {"status": "ok"}


def test_app_accepts_overrides(tmp_path):
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'o.db'}", "max_content_length": 4096})
    assert app.config["MAX_CONTENT_LENGTH"] == 4096


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=60)


def test_cli_start_up_fails_with_one_clear_line(tmp_path):
    result = _run(
        [sys.executable, "-m", "marketplace", "db", "current"],
        {"SEARCH_BACKEND": "solr", "MARKETPLACE_INSTANCE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "marketplace: configuration error: SEARCH_BACKEND: 'solr' is not one of sql, elasticsearch"
    ]


def test_wsgi_start_up_fails_with_one_clear_line(tmp_path):
    result = _run(
        [sys.executable, "-c", "import wsgi"],
        {"DATABASE_URL": "mysql://x/y", "MARKETPLACE_INSTANCE_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("marketplace: configuration error: DATABASE_URL:")
    )
