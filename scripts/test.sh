#!/usr/bin/env bash
# Sets up the environment and runs the tests offline. No flag: the fast unit set (pytest -m unit; markers in
# pyproject.toml, tests/conftest.py). --all: unit and integration tests (what CI runs). Slow checks: add --runslow.
# Other arguments go to pytest. VENV and TL_SPEC choose the environment (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
marker=(-m unit)
rest=()
for a in "$@"; do
  case "$a" in
    --all) marker=() ;;
    --fast) ;;
    *) rest+=("$a") ;;
  esac
done
bash scripts/setup.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q ${marker[@]+"${marker[@]}"} ${rest[@]+"${rest[@]}"}
