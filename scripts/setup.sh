#!/usr/bin/env bash
# Creates or refreshes the project's virtual environment in .venv (idempotent).
#
# torch: on this project's offline machines torch 2.14.1 + torchvision 0.29.1 lie
# on disk (a CUDA build that also runs on the CPU; timm needs a torchvision that
# imports, which the CPU-only torch 2.13.0 wheel does not give). Elsewhere pip
# takes the same versions from PyPI. To keep a torch you installed yourself
# (another CUDA build, ROCm, ...), set HVX_TORCH=keep and create .venv yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${HVX_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
stamp="$VENV/.hvx-deps-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  if [ "${HVX_TORCH:-}" != "keep" ]; then
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  fi
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
  # the editable install just built the extension from the current sources
  cat setup.py csrc/* | sha256sum | cut -c1-16 > "$VENV/.hvx-native"
fi
# Rebuild the native extension when its sources changed (fast, ~20 s).
src_hash=$(cat setup.py csrc/* | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.hvx-native" 2>/dev/null)" != "$src_hash" ] || ! ls engine/_native*.so >/dev/null 2>&1; then
  "$VENV/bin/python" setup.py -q build_ext --inplace
  echo "$src_hash" > "$VENV/.hvx-native"
fi
