#!/usr/bin/env bash
# Everything the suite needs beyond pip: the official npm clients (with a local Node 22),
# Debian's Chromium for browser tests, and PostgreSQL + Redis for the production-mode run.
set -euo pipefail
cd "$(dirname "$0")/.."

# `npm install` (not `npm ci`): it installs the locked versions, but npm 11's ci rejects this
# lockfile over optional platform binaries of a transitive dependency. Each folder brings its
# own Node 22 (the `node` package): its npm scripts run node_modules/.bin/node.
npm_install() {
  [ -f "$1/package-lock.json" ] || return 0
  (cd "$1" && { [ -x node_modules/.bin/node ] && [ node_modules/.package-lock.json -nt package-lock.json ]; } || npm install --no-audit --no-fund --loglevel=error)
}
npm_install tests/node            # the official clients, driven from Node
npm_install examples/react-chat   # the React example the browser tests build with esbuild

if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 50); do
  pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "PostgreSQL or Redis did not come up" >&2
exit 1
