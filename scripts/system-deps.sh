#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when missing.
# Idempotent and quiet when everything is there already.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 || need+=(git)
# traffic providers: real nginx and HAProxy in front of test backends (tests/test_traffic.py)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# the dashboard's browser test: Debian's Chromium driven by Playwright (tests/e2e/test_dashboard_browser.py)
[ -x /usr/bin/chromium ] || need+=(chromium)
# the store suite on a real PostgreSQL: a throw-away cluster made with initdb/pg_ctl (tests/pg.py)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the JupyterHub end-to-end tests (tests/e2e/test_hub.py): the hub's proxy is configurable-http-proxy, a Node program
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${need[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# configurable-http-proxy is not packaged by Debian: from the npm registry, once
if ! command -v configurable-http-proxy >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing configurable-http-proxy (run as root, or: npm install -g configurable-http-proxy)" >&2
    exit 1
  fi
  echo "installing configurable-http-proxy (npm)"
  npm install -g --no-fund --no-audit --loglevel=error configurable-http-proxy >/dev/null
fi
