#!/usr/bin/env bash
# Wheels that benchmarks/gpu_clip.py needs on a GPU machine that has torch and transformers but
# cannot download: this project's pinned versions (constraints.txt) of the packages the
# image-embedding path uses, for that machine's Python (3.12 by default), into .whl/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-3.12}"
pin() { grep -iE "^$1==" constraints.txt | head -1; }
mkdir -p .whl
rm -f .whl/*.whl
pkgs=()
for name in infinity.emb sentence.transformers transformers tokenizers huggingface.hub numpy pydantic \
            pydantic.core pydantic.settings python.dotenv annotated.types typing.inspection typing.extensions; do
  spec="$(pin "${name//./[-_]}")"
  [[ -n "$spec" ]] || { echo "no pin for $name in constraints.txt" >&2; exit 1; }
  pkgs+=("$spec")
done
.venv/bin/pip download -q --no-deps --only-binary=:all: --python-version "$PY" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl "${pkgs[@]}"
du -sh .whl
ls .whl
