#!/usr/bin/env bash
# Install (if needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/msearch ]; then
  bash scripts/setup.sh
fi
bash scripts/system-deps.sh
exec .venv/bin/python -m pytest -q "$@"
