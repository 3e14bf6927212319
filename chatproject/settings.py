"""Settings: embedded defaults with no environment, production from environment variables.

Every variable is listed in README's configuration table.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    return [item.strip() for item in value.split(",") if item.strip()] or default


DATA_DIR = Path(os.environ.get("AGENTS_DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)
# The embedded default key is only fit for a laptop: with DEBUG off the app refuses to start
# without a real one (sessions and CSRF tokens would be forgeable).
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG=false (generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))').")
    SECRET_KEY = "embedded-insecure-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Browser frontends served from another origin (a Vite/esbuild dev server, a static site):
# the one list that admits them to the agent HTTP endpoints (CORS, by django-cors-headers)
# and to the agent WebSockets (agents_app.transport.origins). Full origins, compared exactly.
# `*` admits every origin for token-authenticated use only: no credentials over CORS, and a
# socket admitted by `*` alone ignores the session cookie. The embedded (DEBUG) default
# admits the React example's dev server (examples/react-chat, port 5173).
AGENTS_CORS_ALLOWED_ORIGINS = env_list(
    "AGENTS_CORS_ALLOWED_ORIGINS", ["http://localhost:5173", "http://127.0.0.1:5173"] if DEBUG else []
)
CORS_ALLOW_ALL_ORIGINS = "*" in AGENTS_CORS_ALLOWED_ORIGINS
CORS_ALLOWED_ORIGINS = [] if CORS_ALLOW_ALL_ORIGINS else AGENTS_CORS_ALLOWED_ORIGINS
# Listed origins may send the session cookie (`credentials: "include"`); `*` never may.
CORS_ALLOW_CREDENTIALS = not CORS_ALLOW_ALL_ORIGINS
# A listed frontend may also make cookie-authenticated writes (with Django's CSRF token).
CSRF_TRUSTED_ORIGINS += CORS_ALLOWED_ORIGINS
CORS_URLS_REGEX = r"^/(agents|v1)/"
CORS_EXPOSE_HEADERS = ["X-Request-Id"]
CORS_PREFLIGHT_MAX_AGE = 86400

# Served over HTTPS (usually behind a TLS-terminating proxy that sets X-Forwarded-Proto):
# secure cookies, HSTS and a redirect to https. `manage.py check --deploy` passes with
# DEBUG=false, SECRET_KEY, ALLOWED_HOSTS and AGENTS_HTTPS=true.
AGENTS_HTTPS = env_bool("AGENTS_HTTPS", False)
if AGENTS_HTTPS:
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = int(os.environ.get("AGENTS_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "django_htmx",
    "django_celery_beat",
    "agents_app",
    "agents_app.gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",  # before CommonMiddleware: preflights never redirect
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite, the default or named by DATABASE_URL=sqlite:///…, is tuned for concurrent turns:
# WAL lets the web process read while a turn writes its chunk batches; IMMEDIATE takes the
# write lock when a transaction starts (a deferred one that upgrades fails at once with
# "database is locked"); a busy database is waited for (SQLite retries) before it fails.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": float(os.environ.get("AGENTS_SQLITE_BUSY_TIMEOUT", "20")),
}
# Django's SQLite backend, with this process's writers taking SQLite's lock in turn.
SQLITE_ENGINE = "agents_app.storage.sqlite_backend"
if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        DATABASES["default"]["ENGINE"] = SQLITE_ENGINE
        DATABASES["default"]["OPTIONS"] = {**SQLITE_OPTIONS, **DATABASES["default"].get("OPTIONS", {})}
else:
    DATABASES = {
        "default": {
            "ENGINE": SQLITE_ENGINE,
            "NAME": os.environ.get("SQLITE_PATH", str(DATA_DIR / "db.sqlite3")),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # A file, not memory: browser and Node tests run the server as a separate process.
            "TEST": {"NAME": str(DATA_DIR / "test-db.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_CAPACITY = int(os.environ.get("AGENTS_CHANNEL_CAPACITY", "5000"))
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis that keeps this process's chats working while Redis is away.
            "BACKEND": "agents_app.transport.resilient_layer.ResilientRedisChannelLayer",
            # The default capacity (100) silently drops frames under streaming load.
            "CONFIG": {"hosts": [REDIS_URL], "capacity": CHANNEL_CAPACITY, "expiry": 60},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "agents_app.transport.local_layer.LocalChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": 60},
        }
    }

CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat-home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
AGENTS_SERVE_STATIC = env_bool("AGENTS_SERVE_STATIC", True)
# A server process freezes what start-up built out of the garbage collector's reach and
# collects its youngest objects less often (see chatproject/gc_tuning.py); `false` leaves
# Python's defaults.
AGENTS_GC_FREEZE = env_bool("AGENTS_GC_FREEZE", True)
# Daphne's sockets send a write at once instead of on the next turn of the event loop
# (chatproject/socket_writes.py).
AGENTS_DIRECT_SOCKET_WRITES = env_bool("AGENTS_DIRECT_SOCKET_WRITES", True)

# Celery: Redis in production; an embedded filesystem broker otherwise, so the
# quick start needs no service. The schedule of record lives in the database.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = DATA_DIR / "celery-broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A running turn that has not heart-beaten for this long lost its process and is recovered.
AGENTS_TURN_STALE_SECONDS = float(os.environ.get("AGENTS_TURN_STALE_SECONDS", "20"))
AGENTS_RECOVERY_SWEEP_SECONDS = float(os.environ.get("AGENTS_RECOVERY_SWEEP_SECONDS", "15"))
# Threads for database calls that need no thread affinity (turn admission, streaming
# writes): without them every session's queries queue on asgiref's one shared thread.
# A PostgreSQL query mostly waits on the network (threads overlap it); SQLite's writers queue on
# one lock, so more threads would only wait there.
AGENTS_DB_THREADS = int(os.environ.get("AGENTS_DB_THREADS", "4" if DATABASES["default"]["ENGINE"] == SQLITE_ENGINE else "12"))
# PostgreSQL connections come from a pool (psycopg_pool), never kept per thread: under ASGI
# Django serves each HTTP request on a thread of its own that ends with the request, so a
# connection kept open past the request (CONN_MAX_AGE > 0) outlives its thread unclosed and
# a burst of requests exhausts the server's max_connections. Each database thread above
# holds one pooled connection for its life; the rest serve requests and consumers, which
# wait for a free one (up to the timeout) rather than fail.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    AGENTS_DB_POOL_SIZE = int(os.environ.get("AGENTS_DB_POOL_SIZE", str(AGENTS_DB_THREADS + 8)))
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # No check query each time a connection is taken (it cost a third of the TTFT at 50 chats:
    # WebSocket consumers take one per call). A connection that died idle fails its query once
    # and is dropped from the pool (storage/connections.py).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"]["OPTIONS"] = {
        "pool": {
            "min_size": 1,
            "max_size": max(AGENTS_DB_POOL_SIZE, AGENTS_DB_THREADS + 2),
            "timeout": float(os.environ.get("AGENTS_DB_POOL_TIMEOUT", "30")),
        },
        **DATABASES["default"].get("OPTIONS", {}),
    }
# Count each turn's database round trips (before and after its first token): "1", or a file
# path that receives one JSON line per turn (`manage.py loadbench` reads it). Off when empty.
AGENTS_COUNT_QUERIES = os.environ.get("AGENTS_COUNT_QUERIES", "")
# A directory: each server process keeps its garbage collections' counts and CPU there
# (gc-<pid>.json), for `manage.py loadbench`. Empty: not recorded.
AGENTS_GC_STATS = os.environ.get("AGENTS_GC_STATS", "")
# A file: each turn appends the moments it passes the steps to its first frame
# (agents_app/testing/timeline.py), for `manage.py loadbench`. Empty: not recorded.
AGENTS_TURN_TIMELINE = os.environ.get("AGENTS_TURN_TIMELINE", "")
# A directory: each server process keeps the CPU of its database threads' calls there, by
# function (db-cpu-<pid>.json, agents_app/testing/db_cpu.py), for `manage.py loadbench`.
# Empty: not recorded.
AGENTS_DB_CPU = os.environ.get("AGENTS_DB_CPU", "")
CELERY_BEAT_SCHEDULE = {
    "sweep-stream-buffers": {"task": "agents.sweep_stream_buffers", "schedule": 600.0},
    # Interrupted turns are recovered and one-shot schedules whose task was lost are re-sent.
    "recover-interrupted-turns": {"task": "agents.recover_interrupted_turns", "schedule": AGENTS_RECOVERY_SWEEP_SECONDS},
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)

# Model access. With no OPENAI_* variables the bundled local model is used.
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
OPENAI_MODEL = os.environ.get("OPENAI_MODEL", "")
AGENTS_LOCAL_MODEL_PORT = int(os.environ.get("AGENTS_LOCAL_MODEL_PORT", "8765"))
AGENTS_MODEL_TIMEOUT = float(os.environ.get("AGENTS_MODEL_TIMEOUT", "120"))
# "streaming": model calls use providers/upstream_transport.py (lean HTTP/1.1 for many long
# event streams); "httpx": httpx's own transport, e.g. to rule the first out.
AGENTS_UPSTREAM_TRANSPORT = os.environ.get("AGENTS_UPSTREAM_TRANSPORT", "streaming")
if AGENTS_UPSTREAM_TRANSPORT not in ("streaming", "httpx"):
    raise ImproperlyConfigured("AGENTS_UPSTREAM_TRANSPORT must be 'streaming' or 'httpx'.")
# Seconds an idle connection to a model upstream is kept for the next call. httpx keeps 5,
# and people rarely send their next message within 5 s, so most turns paid a new TCP and TLS
# handshake before the request could leave. A server that closes sooner is noticed at reuse.
AGENTS_UPSTREAM_KEEPALIVE = float(os.environ.get("AGENTS_UPSTREAM_KEEPALIVE", "60"))
# Long conversations (agents_app/think/context_window.py): the context window of models not in
# the built-in table, per-model overrides as JSON ({"my-model": 65536}), and the fraction of the
# window at which Think agents compact older messages (0 = never automatically).
AGENTS_CONTEXT_WINDOW = int(os.environ.get("AGENTS_CONTEXT_WINDOW", "32768"))
AGENTS_MODEL_CONTEXT_WINDOWS = {
    str(name): int(tokens) for name, tokens in json.loads(os.environ.get("AGENTS_MODEL_CONTEXT_WINDOWS") or "{}").items()
}
AGENTS_COMPACTION_THRESHOLD = float(os.environ.get("AGENTS_COMPACTION_THRESHOLD", "0.75"))

# AI gateway (agents_app/gateway): providers, routes, prices, limits and budgets live in the
# admin; these are the defaults without a Route and the call-log retention.
AGENTS_GATEWAY_CACHE_TTL = int(os.environ.get("AGENTS_GATEWAY_CACHE_TTL", "0"))
# Each process keeps a copy of that configuration; an edit made elsewhere (another process, or
# not through the ORM) reaches it within this many seconds.
AGENTS_GATEWAY_CONFIG_TTL_SECONDS = float(os.environ.get("AGENTS_GATEWAY_CONFIG_TTL_SECONDS", "5"))
AGENTS_GATEWAY_LOG_RETENTION_DAYS = int(os.environ.get("AGENTS_GATEWAY_LOG_RETENTION_DAYS", "90"))
CELERY_BEAT_SCHEDULE["prune-model-call-log"] = {"task": "gateway.prune_model_calls", "schedule": 3600.0}

AGENTS_ALLOW_ANONYMOUS = env_bool("AGENTS_ALLOW_ANONYMOUS", False)
# Dotted paths of agent classes defined outside agents_app (comma-separated in the environment).
AGENTS_CLASSES = env_list("AGENTS_CLASSES", [])
AGENTS_MAX_FRAME_BYTES = int(os.environ.get("AGENTS_MAX_FRAME_BYTES", str(1024 * 1024)))
# Test hook (agents_app/testing/faults.py): names a turn stage that raises. Empty in production.
AGENTS_FAULT_INJECTION = os.environ.get("AGENTS_FAULT_INJECTION", "")
# MCP servers: seconds to connect (and list tools) and for one tool call.
AGENTS_MCP_CONNECT_TIMEOUT = float(os.environ.get("AGENTS_MCP_CONNECT_TIMEOUT", "15"))
AGENTS_MCP_TOOL_TIMEOUT = float(os.environ.get("AGENTS_MCP_TOOL_TIMEOUT", "60"))
# Where users reach this app (OAuth redirect URLs of MCP servers: <url>/agents/<agent>/<name>/callback).
AGENTS_PUBLIC_URL = os.environ.get("AGENTS_PUBLIC_URL", "http://localhost:8000")
AGENTS_MCP_CLIENT_NAME = os.environ.get("AGENTS_MCP_CLIENT_NAME", "Django Agents")

# The chat page: the agent `/` opens, attachment limits, and conversation titles.
AGENTS_DEFAULT_AGENT = os.environ.get("AGENTS_DEFAULT_AGENT", "chat-agent")
AGENTS_UPLOAD_MAX_FILES = int(os.environ.get("AGENTS_UPLOAD_MAX_FILES", "5"))
AGENTS_UPLOAD_MAX_IMAGE_BYTES = int(os.environ.get("AGENTS_UPLOAD_MAX_IMAGE_BYTES", str(3_000_000)))
AGENTS_UPLOAD_MAX_FILE_BYTES = int(os.environ.get("AGENTS_UPLOAD_MAX_FILE_BYTES", str(1_000_000)))
AGENTS_IMPORT_MAX_BYTES = int(os.environ.get("AGENTS_IMPORT_MAX_BYTES", str(5_000_000)))
AGENTS_TITLE_MODEL = os.environ.get("AGENTS_TITLE_MODEL", "")  # empty: the agent's own model
# "model": one model call names a new conversation; "words": its first words do.
AGENTS_CHAT_TITLES = os.environ.get("AGENTS_CHAT_TITLES", "model")

# Limits that protect a deployment (agents_app/limits.py); 0 turns one off.
AGENTS_MAX_CONCURRENT_TURNS_PER_USER = int(os.environ.get("AGENTS_MAX_CONCURRENT_TURNS_PER_USER", "8"))
AGENTS_MAX_QUEUED_TURNS_PER_SESSION = int(os.environ.get("AGENTS_MAX_QUEUED_TURNS_PER_SESSION", "20"))
AGENTS_MAX_FRAMES_PER_SECOND = int(os.environ.get("AGENTS_MAX_FRAMES_PER_SECOND", "50"))
AGENTS_MAX_NEW_SESSIONS_PER_MINUTE = int(os.environ.get("AGENTS_MAX_NEW_SESSIONS_PER_MINUTE", "30"))
AGENTS_MAX_LOGIN_FAILURES = int(os.environ.get("AGENTS_MAX_LOGIN_FAILURES", "10"))
# daphne drops (closes on) WebSocket messages over its own limit before our check can answer
# with an error frame, so its limit sits above ours: runserver/`manage.py serve` read these,
# the Procfile passes the same numbers on daphne's command line.
DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE = max(4 * 1024 * 1024, 2 * AGENTS_MAX_FRAME_BYTES)
DAPHNE_WEBSOCKET_MAX_FRAME_SIZE = DAPHNE_WEBSOCKET_MAX_MESSAGE_SIZE

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # API tokens travel in ?token= (the official client's `query` option): never log them.
    "filters": {"redact_tokens": {"()": "agents_app.log_redaction.RedactTokens"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_tokens"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}
