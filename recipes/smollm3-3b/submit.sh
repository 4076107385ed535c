#!/usr/bin/env bash
# Submit the SmolLM3-3B chain to Slurm. Each line submits one job; dependencies come from
# the inputs (a path still being produced by a job becomes afterok). Re-running this script
# skips stages whose artifacts already exist (cache hits). Add --dry-run to only render.
set -euo pipefail
R=$(dirname "$0")
OUT=${OUT:-artifacts/smollm3-3b}
EXTRA=("$@")
# The tokenize job trains the BPE, then runs 256 encode tasks as a job array (one shard
# each) and merges them into one shuffled index.
TOK=$(llmforge tokenize web=data/web code=data/code math=data/math \
        -s vocab_size=128256 -s tasks=256 -s slurm.enabled=true -s slurm.max_parallel=64 \
        -o "$OUT/tokens" --slurm --slurm-config "$R/slurm-small.yaml" "${EXTRA[@]}")
BASE=$(llmforge pretrain "$TOK" -c "$R/pretrain.yaml" -o "$OUT/base" \
        --slurm --slurm-config "$R/slurm-pretrain.yaml" "${EXTRA[@]}")
echo "$BASE"
