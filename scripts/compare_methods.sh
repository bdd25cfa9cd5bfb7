#!/usr/bin/env bash
# The first honest comparison of docs/methods.md: on the offline default (arith,
# tiny teacher -> tiny student), every method starts from the same SFT student
# and the same teacher (both bootstrapped and cached), trains for the same
# number of steps with the same optimiser settings, and is scored by greedy
# accuracy on the 500 test problems. Prints a markdown table at the end.
#   STEPS=500 OUT=outputs/compare bash scripts/compare_methods.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-500}
OUT=${OUT:-outputs/compare}
COMMON=(student.bootstrap.enabled=true "trainer.max_steps=$STEPS" trainer.lr=5e-4 trainer.warmup_steps=50
        trainer.save_every=1000000 eval.after_train=true trainer.progress=false eval.progress=false)
for method in ${METHODS:-sft supervised_kd seqkd gkd minillm xkd}; do
  extra=()
  case $method in gkd|xkd) extra=(divergence=jsd) ;; esac   # GKD paper: JSD(β=0.5), λ=0.5
  distill train "method=$method" "${COMMON[@]}" "${extra[@]}" "hydra.run.dir=$OUT/$method"
done
# The shared starting point and the teacher, scored the same way.
field() { python -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/gkd/summary.json" "$1"; }
distill eval "ckpt=$(field student_init)" eval.progress=false "hydra.run.dir=$OUT/sft_student_start"
distill eval "ckpt=$(field teacher_id)" eval.progress=false "hydra.run.dir=$OUT/teacher"
python scripts/summarize_compare.py "$OUT"
