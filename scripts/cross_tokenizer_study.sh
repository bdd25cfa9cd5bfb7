#!/usr/bin/env bash
# Different tokenizers on the testbed (issue 25; plan and results in docs/results/cross_tokenizer/):
#
#   bash scripts/cross_tokenizer_study.sh [OUT_DIR]     # default outputs/cross_tokenizer_study
#
# Arms × SEEDS, each scored once on the test split: sft and supervised KD from a teacher on tokenizer A
# (TEACHER_VOCAB) to a student on the testbed's tokenizer B (divergence.cross_tokenizer=true); sft and supervised
# KD with both on A; supervised KD from the teacher on B to the student on A (kd_reverse; the direction where the
# student's tokenizer is the finer one); the starts and the teacher on A scored (start_a, start_b). Two chains of one thread (JOBS=1: one after the other); re-running resumes (finished runs are
# skipped). Then `distill report` and scripts/cross_tokenizer_compare.py (PLAN.md's criteria).
# Environment (shrunken in tests): SEEDS, TEACHER_VOCAB, STUDENT_VOCAB, REVERSE, STEPS, EVAL, BOOTSTRAP_STEPS, JOBS, EXTRA, DISTILL, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/chains.sh
OUT=${1:-outputs/cross_tokenizer_study}
DISTILL=${DISTILL:-.venv/bin/distill}
SEEDS=${SEEDS:-0,1,2,3,4}
TEACHER_VOCAB=${TEACHER_VOCAB:-300}   # tokenizer A's vocabulary size
STUDENT_VOCAB=${STUDENT_VOCAB:-512}   # tokenizer B's: the testbed's own (tokenizer.vocab_size)
REVERSE=${REVERSE:-1}                 # 1: also kd_reverse, the teacher on B to the student on A
JOBS=${JOBS:-2}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(experiment=testbed_arith eval.split=test trainer.progress=false eval.progress=false "${EXTRA_ARGS[@]}")
[ -n "${STEPS:-}" ] && COMMON+=(trainer.max_steps="$STEPS")
[ -n "${BOOTSTRAP_STEPS:-}" ] && COMMON+=(student.bootstrap.trainer.max_steps="$BOOTSTRAP_STEPS"
                                          teacher.bootstrap.trainer.max_steps="$BOOTSTRAP_STEPS")
[ -n "${EVAL:-}" ] && COMMON+=(task.max_eval_examples="$EVAL")
mkdir -p "$OUT"
start=$(date +%s)
serial() { local name=$1; shift; $DISTILL train -m "${COMMON[@]}" hydra.sweep.dir="$OUT/$name" seed="$SEEDS" "$@"; }
# The starts scored (one step at warm-up lr, as testbed_study.sh's `start`), with the teacher on A beside B's.
scored() {
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] || $DISTILL train "${COMMON[@]}" trainer.max_steps=1 hydra.run.dir="$OUT/$name" "$@"
}
# Each chain first builds one of the two bootstraps the other needs later (the teacher on A; the start on A);
# a chain that reaches a bootstrap the other is building waits on its lock.
chain_a() {
  scored start_b method=supervised_kd teacher.tokenizer="$TEACHER_VOCAB" divergence.cross_tokenizer=true \
    eval.compare_teacher=true
  serial kd_cross method=supervised_kd teacher.tokenizer="$TEACHER_VOCAB" divergence.cross_tokenizer=true
  serial sft method=sft
}
chain_b() {  # kd_reverse (amendment 3): the testbed's teacher on B to the student on A
  scored start_a method=sft tokenizer.vocab_size="$TEACHER_VOCAB"
  serial sft_same method=sft tokenizer.vocab_size="$TEACHER_VOCAB"
  if [ "$REVERSE" = 1 ]; then
    serial kd_reverse method=supervised_kd tokenizer.vocab_size="$TEACHER_VOCAB" teacher.tokenizer="$STUDENT_VOCAB" \
      divergence.cross_tokenizer=true
  fi
  serial kd_same method=supervised_kd tokenizer.vocab_size="$TEACHER_VOCAB"
}
run_chains "$OUT" chain_a chain_b
echo "study $(( $(date +%s) - start ))" > "$OUT/times.txt"
arms=(sft kd_cross sft_same kd_same)
if [ "$REVERSE" = 1 ]; then arms+=(kd_reverse); fi
$DISTILL report "${arms[@]/#/$OUT/}" --out "$OUT/report"
${PYTHON:-.venv/bin/python} scripts/cross_tokenizer_compare.py "$OUT" | tee "$OUT/comparison.md"
