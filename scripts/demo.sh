#!/usr/bin/env bash
# Sets up the environment and runs the main job offline on the shipped base model: fine-tuned vs scratch,
# analyses, comparison, circuits, figures and report under runs/default/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cogcircuits run experiments/configs/default.toml --out "${OUT:-runs/default}" "$@"
