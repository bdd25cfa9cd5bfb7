#!/usr/bin/env bash
# Tiny-scale reproduction of the X-KD paper's comparisons on the offline arith task.
#
#   bash scripts/reproduce_tiny.sh [OUT_DIR]        # default outputs/reproduce_tiny; ≤ 60 min on 2 CPU cores
#
# 1. every method (sft, supervised_kd, seqkd, gkd, minillm, xkd) × 3 seeds from the same
#    SFT-initialised tiny student and the same bootstrapped tiny teacher (both cached
#    under outputs/cache: the first run bootstraps them, ~8 + 2.5 min), greedy accuracy
#    of student and teacher;
# 2. the performance–diversity trade-off: each method's seed-0 run sampled 4 times per
#    prompt at three temperatures (accuracy and Self-BLEU);
# 3. data efficiency: sft, gkd and xkd on 1 % and 5 % of the train split (200 and 1 000
#    problems) × 3 seeds; 100 % comes from step 1. 200 steps × 32 see 6 400 problems, so
#    the preset's 10 %/30 % would differ little from 100 % here. Teacher and SFT student
#    are bootstrapped on the whole split whatever the fraction (bootstrap_seed=0 throughout);
# 4. `distill report` over all of it.
# Shrunk to fit the budget: 200 optimizer steps per run (batch 32) from the SFT student,
# 200 test problems per evaluation. Re-running resumes finished work from its run dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/reproduce_tiny}
DISTILL=${DISTILL:-.venv/bin/distill}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
COMMON=(trainer.max_steps=200 trainer.warmup_steps=20 trainer.log_every=10 trainer.eval_every=100
        trainer.save_every=200 trainer.progress=false eval.progress=false task.max_eval_examples=200)
start=$(date +%s)
stamp() { echo "[reproduce_tiny] $1 after $(( $(date +%s) - start )) s"; }

$DISTILL train -m experiment=compare_methods "${COMMON[@]}" eval.compare_teacher=true hydra.sweep.dir="$OUT/methods"
stamp "methods × seeds trained and evaluated"

# run dirs are <method>-arith-tiny/<sorted overrides>, e.g. experiment=compare_methods,seed=0,...
runs=$(find "$OUT/methods" -mindepth 2 -maxdepth 2 -type d \( -name 'seed=0,*' -o -name '*,seed=0,*' \) | sort)
[ "$(echo "$runs" | grep -c .)" -eq 6 ] || { echo "reproduce_tiny: expected 6 seed-0 runs under $OUT/methods, found: $runs" >&2; exit 1; }
for run in $runs; do
  $DISTILL eval ckpt="$run" eval.num_samples=4 "eval.sampling_temperatures=[0.5,1.0,1.5]" \
    task.max_eval_examples=200 eval.progress=false
done
stamp "temperature sweep done"

$DISTILL train -m experiment=data_efficiency task.train_fraction=0.01,0.05 "${COMMON[@]}" \
  hydra.sweep.dir="$OUT/data_efficiency"
stamp "data-efficiency sweep done"

$DISTILL report "$OUT/methods" "$OUT/data_efficiency" --out "$OUT/report"
stamp "report written to $OUT/report"
