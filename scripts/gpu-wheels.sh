#!/usr/bin/env bash
# Download the few wheels a bare GPU node lacks, for scripts/gpu-check.sh to install offline.
#
#   scripts/gpu-wheels.sh [DIR]        (default: .gpu-wheels at the repo root, gitignored)
#
# GPU_WHEELS_PY=3.11 fetches the same set for Python 3.11 (a rehearsal on this machine).
#
# The borrowed H200 (shared/ENVIRONMENT.md) has Python 3.12, torch 2.11, Triton 3.6,
# transformers 5.17, accelerate, peft, safetensors, tokenizers, typer, rich, pyyaml and
# pytest, but no network. This fetches, on a machine that has one, cp312 manylinux wheels
# of what the GPU check needs beyond that: our transformers floor (5.23) and TRL with the
# packages TRL and datasets import, Liger-Kernel (the kernel baseline) and math-verify (the
# rlvr reward). `--no-deps`: each dependency is named here, so nothing drags in torch.
# The folder must stay under 64 MiB, what one device call carries; the script checks it.
# torch, triton and vLLM are never fetched (vLLM's wheel alone is far over that limit).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.gpu-wheels}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
LIMIT_MIB=64
PYV="${GPU_WHEELS_PY:-3.12}"  # the node's Python; 3.11 fetches a set to rehearse on this machine

# The versions our CPU venv runs (tested together); keep in step with pyproject.toml.
WHEELS=(
    transformers==5.24.0     # pyproject asks >=5.23; the node has 5.17
    regex==2026.11.19        # transformers checks regex>=2025.10.22 at import
    trl==1.16.0
    datasets==5.2.0          # trl imports it
    dill==0.4.1              # datasets
    multiprocess==0.70.19    # datasets
    fsspec==2026.9.0         # datasets pins fsspec<=2026.9.0
    peft==0.21.2             # pyproject asks >=0.21; the node's version is not known
    liger-kernel==0.8.5      # bench/kernels_gpu.py baseline
    orjson==3.13.0           # llmforge.data.sources (tokenize, eval)
    math-verify==0.9.0       # the rlvr math reward
    latex2sympy2_extended==1.11.0
    antlr4-python3-runtime==4.13.2
)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

mkdir -p "$DIR"
args=(--no-deps --only-binary=:all: --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" -d "$DIR")
for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
# One `pip download` per wheel: a name missing for the platform fails alone, with its name.
for spec in "${WHEELS[@]}"; do
    name="${spec%%==*}"
    if ls "$DIR"/"$(echo "$name" | tr - _)"-"${spec#*==}"-*.whl >/dev/null 2>&1; then
        continue
    fi
    "$PYTHON" -m pip download -q "${args[@]}" "$spec" || { echo "gpu-wheels: could not fetch $spec" >&2; exit 1; }
done

total=$(du -sb "$DIR" | cut -f1)
mib=$(( (total + 1048575) / 1048576 ))
echo "gpu-wheels: $(ls "$DIR"/*.whl | wc -l) wheels, ${mib} MiB in $DIR" >&2
if [ "$mib" -gt "$LIMIT_MIB" ]; then
    echo "gpu-wheels: over the ${LIMIT_MIB} MiB a device call carries; drop a wheel" >&2
    exit 1
fi
echo "$DIR"
