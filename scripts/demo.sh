#!/usr/bin/env bash
# Sets up .venv if needed, then runs hvx's main job on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hvx info
