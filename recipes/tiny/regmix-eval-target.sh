#!/usr/bin/env bash
# RegMix against an eval artifact's metrics, OLMo 3 style: general bits-per-byte plus the
# bits-per-byte of held-out math answers, measured on every proxy. Run after the demo:
#
#   recipes/tiny/regmix-eval-target.sh [OUT]       (OUT: the demo's output, demo-out/full)
#
# It writes OUT/tasks/math-base.jsonl (the eval math problems as plain completions, the
# form the pretraining data uses), OUT/target-eval (the suite, run once on the base model)
# and OUT/mixture-eval-target (32 proxies, the fit, the chosen mixture and its confirmation).
set -euo pipefail
shopt -s inherit_errexit

OUT=${1:-demo-out/full}
R=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for need in "$OUT/tokens" "$OUT/base" "$OUT/data/eval/math.jsonl"; do
    [[ -e $need ]] || { echo "missing $need: run recipes/tiny/pipeline.sh first" >&2; exit 2; }
done

mkdir -p "$OUT/tasks"
python - "$OUT/data/eval/math.jsonl" "$OUT/tasks/math-base.jsonl" <<'PY'
import json, sys
src, dst = sys.argv[1:]
with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
    for line in list(f)[:200]:
        row = json.loads(line)
        row.update(chat=False, prompt=f"Problem: {row['prompt']}\nSolution: The answer is ")
        out.write(json.dumps(row) + "\n")
PY

EVAL=$(llmforge eval "$OUT/base" tokens="$OUT/tokens" task="$OUT/tasks/math-base.jsonl" \
    -c "$R/eval-target.yaml" -o "$OUT/target-eval")
llmforge regmix "$OUT/tokens" eval="$EVAL" -c "$R/regmix.yaml" -s proposals.n_proxies=32 \
    -s target.loss_weight=0 -s 'target.metrics={loss.overall.bpb: 1, tasks.math-base.answer_bpb: 1}' \
    -o "$OUT/mixture-eval-target"
