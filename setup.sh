#!/usr/bin/env bash
# Set up everything the project and its tests need, on a fresh machine:
#   .venv/        the app, training and test dependencies (requirements-dev.txt)
#   .olah-venv/   olah, a hub-compatible server the Hub tests run on loopback (own venv: its pins clash)
#   chromium      Debian's browser for the UI test (installed with apt when run as root)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt

[ -x .olah-venv/bin/olah-cli ] || { "$PYTHON" -m venv .olah-venv && .olah-venv/bin/python -m pip install -q --upgrade pip \
  && .olah-venv/bin/python -m pip install -q -r requirements-olah.txt; }

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium is not installed; the browser test will be skipped (sudo apt-get install chromium)"
  fi
fi
echo "setup done: run the tests with  .venv/bin/python -m pytest"
