#!/usr/bin/env bash
# The GPU check: every GPU path of llmforge in one prepared run of at most 8 minutes.
#
#   scripts/gpu-check.sh [OUTDIR]      (default: $OUT, else gpu-check-out/ at the repo root)
#
# Parts, each under its own timeout, each logging to OUTDIR/PART.log; a failing part does
# not stop the next one. Figures go to OUTDIR/figures.jsonl and the table printed last to
# OUTDIR/summary.txt. See docs/benchmarks.md ("GPU check") for what each part measures.
#
#   setup     install the wheels of GPU_WHEELS (scripts/gpu-wheels.sh) into a private
#             folder, without touching torch; report versions and the GPU
#   tests     pytest -m gpu: Triton kernels at real shapes, FlexAttention document masks
#   kernels   bench/kernels_gpu.py: each kernel vs eager, torch.compile and Liger-Kernel
#   pretrain  bench/gpu_pretrain.py: ~1.2B model, 100 bf16 steps: tokens/s, MFU, memory
#   post      bench/gpu_post.py: sft, dpo, rlvr and eval steps (vLLM parts where installed)
#
# Without CUDA it runs the dry path, which needs no GPU: the wheel install (from
# GPU_WHEELS when it holds any), `pytest --collect-only -m gpu`, and each benchmark's
# --dry harness on tiny CPU shapes. `make test` runs it (tests/scripts/test_gpu_check.py).
#
# Environment: PYTHON (default python3), GPU_WHEELS (default .gpu-wheels),
# GPU_CHECK_SITE (where wheels go; default $TMPDIR/llmforge-gpu-site),
# GPU_CHECK_PARTS (default "setup tests kernels pretrain post"),
# GPU_CHECK_BUDGET_S (default 480), GPU_CHECK_MODE (gpu or dry; default: gpu with CUDA).
# Exit status: 0 when no part failed or timed out, else 1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
OUTDIR="${1:-${OUT:-$ROOT/gpu-check-out}}"
PYTHON="${PYTHON:-python3}"
WHEELS="${GPU_WHEELS:-$ROOT/.gpu-wheels}"
SITE="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/llmforge-gpu-site}"
PARTS="${GPU_CHECK_PARTS:-setup tests kernels pretrain post}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
# our own default folder starts empty, so what is installed is exactly the wheels folder
[ -z "${GPU_CHECK_SITE:-}" ] && rm -rf "$SITE"
mkdir -p "$OUTDIR" "$SITE"
OUTDIR="$(cd "$OUTDIR" && pwd)"
FIGURES="$OUTDIR/figures.jsonl"
SUMMARY="$OUTDIR/summary.txt"
: >"$FIGURES"
: >"$SUMMARY.rows"
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
cd "$ROOT" || exit 1

MODE="${GPU_CHECK_MODE:-}"
if [ -z "$MODE" ]; then
    MODE=dry
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && MODE=gpu
fi
if [ "$MODE" = dry ]; then
    DRY=(--dry)
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
    declare -A LIMIT=([setup]=120 [tests]=120 [kernels]=120 [pretrain]=120 [post]=120)
else
    DRY=()
    # Shares of the 8 minutes; time a part leaves unused passes to the parts after it.
    declare -A LIMIT=([setup]=30 [tests]=100 [kernels]=90 [pretrain]=170 [post]=90)
fi
START=$(date +%s)

row() { # row PART STATUS SECONDS FIGURE: one line of the final table
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$SUMMARY.rows"
}

time_for() { # time_for PART: its default share, plus whatever the parts before left over
    local part=$1 later=0 seen=0 left p
    left=$((BUDGET_S - ($(date +%s) - START)))
    for p in $PARTS; do
        [ "$seen" = 1 ] && later=$((later + ${LIMIT[$p]:-60}))
        [ "$p" = "$part" ] && seen=1
    done
    local t=$((left - later))
    [ "$t" -lt "${LIMIT[$part]}" ] && t=${LIMIT[$part]}
    [ "$t" -gt "$left" ] && t=$left
    echo "$t"
}

last_error() { # the line that best says why a log's command failed
    grep -E "Error|error:|FAILED|Traceback" "$1" | tail -n 1 | cut -c1-110
}

run_part() { # run_part PART CMD...: run under its timeout, log, and add its table row(s)
    local part=$1 t start rc secs log="$OUTDIR/$1.log" figure status
    shift
    t=$(time_for "$part")
    if [ "$t" -lt 15 ]; then
        row "$part" skip 0 "out of time (budget ${BUDGET_S} s)"
        return
    fi
    echo "== $part (timeout ${t} s): $*" >&2
    start=$(date +%s)
    timeout -k 10 "$t" "$@" >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    figure=$(grep -E '^FIGURE: ' "$log" | tail -n 1 | cut -d' ' -f2-)
    case $rc in
        0) status=ok ;;
        124 | 137) status=TIMEOUT; figure="killed after ${t} s; ${figure:-see $part.log}" ;;
        *) status=FAIL; figure="rc $rc: $(last_error "$log")" ;;
    esac
    row "$part" "$status" "$secs" "${figure:-see $part.log}"
    # parts made of several checks (post) print one ROW line each
    grep -E '^ROW: ' "$log" | sed 's/^ROW: //' | while IFS='|' read -r name st fig; do
        row "  $(trim "$name")" "$(trim "$st")" - "$(trim "$fig")"
    done
}

trim() { # trim TEXT: without leading and trailing blanks
    local s="$1"
    s="${s#"${s%%[![:space:]]*}"}"
    printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# ---------------------------------------------------------------- the parts

part_setup() {
    local wheels=()
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        mapfile -t wheels < <("$PYTHON" - "$WHEELS" <<'EOF'
import sys
from pathlib import Path
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename

ours = set(sys_tags())
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    if ours & set(parse_wheel_filename(wheel.name)[3]):
        print(wheel)
    else:
        print(f"skipped (not for this Python): {wheel.name}", file=sys.stderr)
EOF
        )
        echo "installing ${#wheels[@]} wheels from $WHEELS into $SITE (torch untouched)"
        if [ "${#wheels[@]}" -gt 0 ]; then
            "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target "$SITE" "${wheels[@]}" || return 1
        fi
    else
        echo "no wheels in $WHEELS: using the packages installed here"
    fi
    "$PYTHON" - "$SITE" "$MODE" <<'EOF'
import importlib, importlib.metadata as md, importlib.util, sys
import torch

site, mode = sys.argv[1:3]
shipped = sorted(d.metadata["Name"] for d in md.distributions(path=[site]))
print("installed into", site, ":", ", ".join(shipped) or "nothing")
for name in ("torch", "triton", "transformers", "accelerate", "peft", "trl", "datasets",
             "liger_kernel", "vllm"):
    try:  # on the GPU, import each (a broken install shows here); dry, only locate it
        mod = importlib.import_module(name) if mode == "gpu" else None
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise ImportError("not installed")
        version = md.version(name.replace("_", "-"))
        print(f"{name:>13} {version}  {spec.origin}")
    except Exception as e:  # report every package, importable or not
        print(f"{name:>13} missing ({type(e).__name__}: {e})")
for name in ("llmforge", "llmforge.ops", "llmforge.model.gpt", "stages.pretrain", "stages.sft",
             "stages.dpo", "stages.rlvr", "stages.eval", "stages.tokenize"):
    importlib.import_module(name)  # a failure here fails the setup part
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA (dry path)"
print(f"FIGURE: torch {torch.__version__}, {gpu}, {len(shipped)} wheels installed")
EOF
}

gpu_test_files() {
    grep -rlE --include='test_*.py' 'pytest\.mark\.gpu' tests | sort
}

part_tests() {
    local files
    mapfile -t files < <(gpu_test_files)
    if [ "$MODE" = dry ]; then
        "$PYTHON" -m pytest -p no:cacheprovider -q --collect-only -m gpu "${files[@]}" || return 1
        echo "FIGURE: $(grep -cE '::' "$OUTDIR/tests.log") gpu tests collected in ${#files[@]} files"
        return 0
    fi
    "$PYTHON" -m pytest -p no:cacheprovider -q -m gpu -rfE "${files[@]}"
    local rc=$?
    echo "FIGURE: $(grep -E '[0-9]+ (passed|failed)' "$OUTDIR/tests.log" | tail -n 1 | tr -d '=')"
    return $rc
}

# the parts run under `timeout`, in a child bash
export -f part_setup part_tests gpu_test_files
export PYTHON WHEELS SITE MODE OUTDIR
echo "gpu-check: mode $MODE, parts: $PARTS, budget ${BUDGET_S} s, logs in $OUTDIR" >&2
for part in $PARTS; do
    case $part in
        setup) run_part setup bash -c part_setup ;;
        tests) run_part tests bash -c part_tests ;;
        kernels) run_part kernels "$PYTHON" bench/kernels_gpu.py "${DRY[@]}" --json "$FIGURES" ;;
        pretrain) run_part pretrain "$PYTHON" bench/gpu_pretrain.py "${DRY[@]}" --json "$FIGURES" ;;
        post) run_part post "$PYTHON" bench/gpu_post.py "${DRY[@]}" --json "$FIGURES" ;;
        *) row "$part" FAIL 0 "unknown part (choose from setup tests kernels pretrain post)" ;;
    esac
done

{
    echo "gpu-check ($MODE) $(date -u +%Y-%m-%dT%H:%MZ), $(($(date +%s) - START)) s in all, logs in $OUTDIR"
    printf '%-14s %-8s %5s  %s\n' part status s figure
    while IFS=$'\t' read -r part status secs figure; do
        printf '%-14s %-8s %5s  %s\n' "$part" "$status" "$secs" "$figure"
    done <"$SUMMARY.rows"
} >"$SUMMARY"
rm -f "$SUMMARY.rows"
cat "$SUMMARY"
! grep -qE '^\S+ +(FAIL|TIMEOUT) ' "$SUMMARY"
