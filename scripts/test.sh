#!/usr/bin/env bash
# Sets up the environment and runs the test suite offline: unit and integration tests (what CI runs). Slow checks:
# add --runslow. --fast: only the fast unit tests (pytest -m unit; markers in pyproject.toml, tests/conftest.py).
# Other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
for a in "$@"; do
  if [ "$a" = "--fast" ]; then args+=(-m unit); else args+=("$a"); fi
done
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q ${args[@]+"${args[@]}"}
