#!/usr/bin/env bash
# Create .venv in the repository and install msearch with its pinned dependencies.
#   scripts/setup.sh            CPU (default)
#   MSEARCH_TORCH_INDEX=https://download.pytorch.org/whl/cu128 scripts/setup.sh   another torch build
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
start=$(date +%s)
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(quiet .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt)
# pip warns about every empty entry of a local package index some machines configure.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# torch first and alone, so that nothing else can pull a different build of it.
if [ -n "${MSEARCH_TORCH_INDEX:-}" ]; then
  "${pip[@]}" --index-url "$MSEARCH_TORCH_INDEX" torch==2.13.0
else
  "${pip[@]}" torch==2.13.0
fi
"${pip[@]}" -e ".[test]"
echo "msearch installed in .venv ($(( $(date +%s) - start )) s): $(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')"
