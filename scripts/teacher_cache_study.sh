#!/usr/bin/env bash
# Teacher caches on the testbed (issue 24; plan and results in docs/results/teacher_cache/):
#
#   bash scripts/teacher_cache_study.sh [OUT_DIR]      # default outputs/teacher_cache_study
#
# 1. the cache: `distill teacher-cache` at teacher_cache.epsilon=EPSILON for the testbed's supervised-KD runs
#    (timed); 2. the dense sweep (the live teacher), seeds SEEDS; 3. the cached sweep (teacher.cache=DIR), the same
#    seeds; each sweep timed; 4. `distill report`, and scripts/teacher_cache_compare.py: the paired per-seed
#    difference cached − dense with its 95 % CI against PLAN.md's criteria, the mean logged bound, the times.
# Runs one after the other (JOBS does not apply): the wall times are the comparison. Environment (shrunken in
# tests): SEEDS, EPSILON, STEPS, EVAL, EXTRA, DISTILL, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/teacher_cache_study}
DISTILL=${DISTILL:-.venv/bin/distill}
SEEDS=${SEEDS:-0,1,2,3,4}
EPSILON=${EPSILON:-1e-3}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
COMMON=(experiment=testbed_arith method=supervised_kd eval.split=validation trainer.progress=false
        eval.progress=false "${EXTRA_ARGS[@]}")
[ -n "${STEPS:-}" ] && COMMON+=(trainer.max_steps="$STEPS")
[ -n "${EVAL:-}" ] && COMMON+=(task.max_eval_examples="$EVAL")
mkdir -p "$OUT"
timed() {  # NAME COMMAND...: run it, append "NAME seconds" to OUT/times.txt
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "$name $(( $(date +%s) - start ))" >> "$OUT/times.txt"
}
: > "$OUT/times.txt"
timed cache_build $DISTILL teacher-cache "${COMMON[@]}" teacher_cache.epsilon="$EPSILON" teacher_cache.k=null \
  teacher_cache.dir="$OUT/cache"
timed dense_sweep $DISTILL train -m "${COMMON[@]}" seed="$SEEDS" hydra.sweep.dir="$OUT/dense"
timed cached_sweep $DISTILL train -m "${COMMON[@]}" seed="$SEEDS" teacher.cache="$OUT/cache" \
  teacher_cache.epsilon="$EPSILON" teacher_cache.k=null hydra.sweep.dir="$OUT/cached"
$DISTILL report "$OUT/dense" "$OUT/cached" --out "$OUT/report"
${PYTHON:-.venv/bin/python} scripts/teacher_cache_compare.py "$OUT" | tee "$OUT/comparison.md"
