"""Settings from environment variables, with embedded defaults.

Every setting is read once, validated, and turned into a frozen ``Settings``. A bad value raises
``ConfigError`` whose message is one line naming the variable and the problem, so start-up can
stop with exactly that line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from limits.strategies import STRATEGIES as RATE_LIMIT_STRATEGIES

SEARCH_BACKENDS = ("sql", "elasticsearch")
OCDS_PREFIX = re.compile(r"^ocds-[a-z0-9]{6}$")  # an OCDS prefix: "ocds-" and six characters
MIN_GROUP_SIZE_FLOOR = 3  # open data never publishes a group smaller than this
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_INSTANCE_DIR = Path.cwd() / "instance"
REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
MIN_METRICS_TOKEN_LENGTH = 24
# Rate limits (flask-limiter notation: "N per period", several joined by ";"), by variable.
RATE_LIMIT_VARIABLES = {
    "rate_limit_authenticated": "RATE_LIMIT_AUTHENTICATED",
    "rate_limit_anonymous": "RATE_LIMIT_ANONYMOUS",
    "rate_limit_write": "RATE_LIMIT_WRITE",
    "rate_limit_import": "RATE_LIMIT_IMPORT",
    "rate_limit_auth_failures": "RATE_LIMIT_AUTH_FAILURES",
}


class ConfigError(ValueError):
    """A setting is missing or invalid. ``str(error)`` is a single line for the operator."""

    def __init__(self, variable: str, problem: str):
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True)
class Settings:
    database_url: str
    instance_dir: Path = DEFAULT_INSTANCE_DIR
    search_backend: str = "sql"
    elasticsearch_url: str | None = None
    elasticsearch_index: str = "marketplace-products"
    # Entries in each process's search request cache (SQL backend); 0 turns it off.
    search_cache_size: int = 1024
    # Megabytes of that cache for the matches and relevance scores kept per query; 0 keeps none.
    search_cache_mb: int = 64
    # Secrets: kept out of repr()/str() so that logging or printing the settings shows neither.
    stripe_api_key: str | None = field(default=None, repr=False)
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    max_content_length: int = 16 * 1024 * 1024
    sqlite_busy_timeout_ms: int = 30_000
    public_base_url: str = "http://127.0.0.1:8000"
    ocds_prefix: str = "ocds-mkt000"
    min_group_size: int = 5
    # Abuse limits: per API token (its hash) when the request carries one, else per client IP.
    rate_limit_enabled: bool = True
    rate_limit_authenticated: str = "1200 per minute"  # every request with a token
    rate_limit_anonymous: str = "300 per minute"  # every request without one, per IP
    rate_limit_write: str = "120 per minute"  # POST/PUT/PATCH/DELETE
    rate_limit_import: str = "30 per hour"  # offer and purchase imports
    rate_limit_auth_failures: str = "30 per minute"  # 401 answers per IP (guessed tokens)
    rate_limit_strategy: str = "fixed-window"
    rate_limit_key_prefix: str = "marketplace"
    redis_url: str | None = None  # rate-limit counters in Redis (shared by every worker)
    trusted_proxy_count: int = 0  # reverse proxies whose X-Forwarded-For is believed
    # The bearer token a Prometheus scraper sends to /metrics (kept out of repr and logs).
    metrics_token: str | None = field(default=None, repr=False)
    testing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        # The dataclass repr, with any password in a URL (database, Elasticsearch) masked; the
        # Stripe secrets are left out altogether (repr=False above).
        shown = ", ".join(
            f"{f.name}={_mask_password(getattr(self, f.name))!r}" for f in fields(self) if f.repr
        )
        return f"Settings({shown})"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgresql(self) -> bool:
        return self.database_url.startswith("postgresql")

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        extra = dict(self.extra)
        for name in unknown:
            extra[name] = overrides.pop(name)
        settings = replace(self, **overrides, extra=extra)
        return validate(settings)


def _mask_password(value: Any) -> Any:
    """``scheme://user:***@host/...`` for a URL that carries a password; anything else as is."""
    if not isinstance(value, str) or "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def normalise_database_url(raw: str) -> str:
    """Accept the usual URL forms and select psycopg 3 for PostgreSQL."""
    url = raw.strip()
    scheme = urlsplit(url).scheme
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg" + url[len(scheme) :]
    if scheme in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        return url
    if not scheme:
        raise ConfigError(
            "DATABASE_URL",
            f"{raw!r} is not a URL; use sqlite:///path or postgresql://user@host:port/db",
        )
    raise ConfigError(
        "DATABASE_URL",
        f"unsupported database {scheme!r}; use sqlite:///path or postgresql://user@host:port/db",
    )


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"{raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"{raw!r} is not true or false")


def _url(name: str, value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, f"{value!r} is not an http(s) URL")
    return value.strip().rstrip("/")


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    instance_dir = Path(env.get("MARKETPLACE_INSTANCE_DIR") or DEFAULT_INSTANCE_DIR)
    default_db = f"sqlite:///{instance_dir / 'marketplace.sqlite3'}"
    settings = Settings(
        database_url=normalise_database_url(env.get("DATABASE_URL") or default_db),
        instance_dir=instance_dir,
        search_backend=(env.get("SEARCH_BACKEND") or "sql").strip().lower(),
        elasticsearch_url=env.get("ELASTICSEARCH_URL") or None,
        elasticsearch_index=env.get("ELASTICSEARCH_INDEX") or "marketplace-products",
        search_cache_size=_int(env, "SEARCH_CACHE_SIZE", 1024, minimum=0),
        search_cache_mb=_int(env, "SEARCH_CACHE_MB", 64, minimum=0),
        stripe_api_key=env.get("STRIPE_API_KEY") or None,
        stripe_api_base=env.get("STRIPE_API_BASE") or None,
        stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET") or None,
        log_level=(env.get("LOG_LEVEL") or "INFO").strip().upper(),
        max_content_length=_int(env, "MAX_CONTENT_LENGTH", 16 * 1024 * 1024, minimum=1024),
        sqlite_busy_timeout_ms=_int(env, "SQLITE_BUSY_TIMEOUT_MS", 30_000, minimum=0),
        public_base_url=env.get("PUBLIC_BASE_URL") or "http://127.0.0.1:8000",
        ocds_prefix=(env.get("OCDS_PREFIX") or "ocds-mkt000").strip(),
        min_group_size=_int(env, "OPEN_DATA_MIN_GROUP_SIZE", 5, minimum=MIN_GROUP_SIZE_FLOOR),
        rate_limit_enabled=_bool(env, "RATE_LIMIT_ENABLED", True),
        rate_limit_strategy=(env.get("RATE_LIMIT_STRATEGY") or "fixed-window").strip().lower(),
        rate_limit_key_prefix=(env.get("RATE_LIMIT_KEY_PREFIX") or "marketplace").strip(),
        redis_url=(env.get("REDIS_URL") or "").strip() or None,
        trusted_proxy_count=_int(env, "TRUSTED_PROXY_COUNT", 0, minimum=0),
        metrics_token=(env.get("METRICS_TOKEN") or "").strip() or None,
        **{
            name: env[variable].strip()
            for name, variable in RATE_LIMIT_VARIABLES.items()
            if (env.get(variable) or "").strip()
        },
    )
    return validate(settings)


def _validate_limits(settings: Settings) -> None:
    for name, variable in RATE_LIMIT_VARIABLES.items():
        value = getattr(settings, name)
        try:
            parsed = parse_many(value)
        except ValueError:
            parsed = []
        if not parsed:
            raise ConfigError(
                variable, f"{value!r} is not a rate limit such as '100 per minute' or '10/second'"
            )
    if settings.rate_limit_strategy not in RATE_LIMIT_STRATEGIES:
        raise ConfigError(
            "RATE_LIMIT_STRATEGY",
            f"{settings.rate_limit_strategy!r} is not one of {', '.join(RATE_LIMIT_STRATEGIES)}",
        )
    if settings.redis_url and urlsplit(settings.redis_url).scheme not in REDIS_SCHEMES:
        raise ConfigError(
            "REDIS_URL", f"{settings.redis_url!r} is not a redis:// (or rediss://) URL"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", settings.rate_limit_key_prefix):
        raise ConfigError(
            "RATE_LIMIT_KEY_PREFIX", "use 1 to 64 letters, digits, '_', '.', ':' or '-'"
        )
    if settings.trusted_proxy_count < 0:
        raise ConfigError("TRUSTED_PROXY_COUNT", "must be at least 0")
    token = settings.metrics_token
    if token is not None and len(token) < MIN_METRICS_TOKEN_LENGTH:
        raise ConfigError(
            "METRICS_TOKEN",
            f"must be at least {MIN_METRICS_TOKEN_LENGTH} characters (use a random secret)",
        )


def validate(settings: Settings) -> Settings:
    normalise_database_url(settings.database_url)
    if settings.search_backend not in SEARCH_BACKENDS:
        raise ConfigError(
            "SEARCH_BACKEND",
            f"{settings.search_backend!r} is not one of {', '.join(SEARCH_BACKENDS)}",
        )
    if settings.search_cache_size < 0:
        raise ConfigError(
            "SEARCH_CACHE_SIZE", f"must be at least 0, got {settings.search_cache_size}"
        )
    if settings.search_cache_mb < 0:
        raise ConfigError("SEARCH_CACHE_MB", f"must be at least 0, got {settings.search_cache_mb}")
    es_url = _url("ELASTICSEARCH_URL", settings.elasticsearch_url)
    if settings.search_backend == "elasticsearch" and not es_url:
        raise ConfigError("ELASTICSEARCH_URL", "is required when SEARCH_BACKEND=elasticsearch")
    stripe_base = _url("STRIPE_API_BASE", settings.stripe_api_base)
    _url("PUBLIC_BASE_URL", settings.public_base_url)
    if not OCDS_PREFIX.match(settings.ocds_prefix):
        raise ConfigError(
            "OCDS_PREFIX",
            f"{settings.ocds_prefix!r} is not an OCDS prefix ('ocds-' and 6 lowercase letters or digits)",
        )
    if settings.min_group_size < MIN_GROUP_SIZE_FLOOR:
        raise ConfigError(
            "OPEN_DATA_MIN_GROUP_SIZE",
            f"must be at least {MIN_GROUP_SIZE_FLOOR}, got {settings.min_group_size}",
        )
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(
            "LOG_LEVEL", f"{settings.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    _validate_limits(settings)
    key = settings.stripe_api_key
    if key and not key.startswith(("sk_", "rk_")):
        raise ConfigError(
            "STRIPE_API_KEY", "must be a Stripe secret or restricted key (sk_… or rk_…)"
        )
    secret = settings.stripe_webhook_secret
    if secret and not secret.startswith("whsec_"):
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET", "must be a Stripe webhook signing secret (whsec_…)"
        )
    return replace(settings, elasticsearch_url=es_url, stripe_api_base=stripe_base)
