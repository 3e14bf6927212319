#!/usr/bin/env bash
# The whole suite twice: embedded mode (SQLite + in-memory channel layer), then production
# mode (PostgreSQL + channels-redis) for the tests that depend on those engines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p test-artifacts

echo "== embedded mode: SQLite + InMemoryChannelLayer =="
env -u DATABASE_URL -u REDIS_URL "$PY" -m pytest -p no:cacheprovider "$@"

echo "== production mode: PostgreSQL + channels-redis =="
DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres} \
REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/0} \
  "$PY" -m pytest -p no:cacheprovider -m "backends" "$@"
