#!/usr/bin/env bash
# The pilot of testbed v2 (issue 22; docs/results/testbed_v2/pilot.md): every setting of the study is chosen
# here, on the validation split, before the test split is scored at all.
#
#   bash scripts/testbed_pilot.sh TASK PHASE [OUT_DIR]   # TASK = arith | lingua; PHASE = start | tune;
#                                                         # default OUT_DIR outputs/pilot_TASK
#
# Phases (each a sweep; re-running resumes, finished runs are not retrained). The preset's start
# (conf/experiment/testbed_TASK.yaml) is set from phase 1's result before phase 2 runs:
#   1. start: the start: the student's own SFT data (task.start_examples) × its length (bootstrap steps), each scored on
#      validation after one step at warm-up lr (the start itself); the teacher beside it;
#   2. tune: the learning rate of the distillation runs: gkd (λ = 1) and seqkd × LRS, seed 0, val/loss every 50 steps;
#      and X-KD diagnostics (on gkd λ = 1): revision 2's prior (σ0 = 1) and revision 3's (σ0 = 10), seeds 0 and 1
#      (gkd itself at seed 1 beside phase 2's seed 0); α = 0.5, the SARSA target, the oracle arm and the
#      closed-form control at seed 0; metrics.jsonl holds
#      corr(μ, δ^T), 1/σ_eff² and the gradient ratio ‖∇ α-term‖ / ‖∇ base‖.
# Environment: STARTS (start_examples list), START_STEPS, LRS, JOBS (parallel jobs, one thread each), EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK=${1:?usage: bash scripts/testbed_pilot.sh arith|lingua start|tune [OUT_DIR]}
PHASE=${2:?usage: bash scripts/testbed_pilot.sh arith|lingua start|tune [OUT_DIR]}
OUT=${3:-outputs/pilot_$TASK}
DISTILL=${DISTILL:-.venv/bin/distill}
STARTS=${STARTS:-1000,2000}
START_STEPS=${START_STEPS:-200,400,800}
LRS=${LRS:-3e-4,1e-3,3e-3}
JOBS=${JOBS:-2}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(experiment="testbed_$TASK" trainer.progress=false eval.progress=false eval.split=validation "${EXTRA_ARGS[@]}")
PARALLEL=()
[ "$JOBS" -gt 1 ] && PARALLEL=(hydra/launcher=local_parallel hydra.launcher.n_jobs="$JOBS")
start=$(date +%s)
stamp() { echo "[testbed_pilot $TASK] $1 after $(( $(date +%s) - start )) s"; }
sweep() { local name=$1; shift; $DISTILL train -m "${COMMON[@]}" ${PARALLEL[@]+"${PARALLEL[@]}"} hydra.sweep.dir="$OUT/$name" "$@"; }

if [ "$PHASE" = start ]; then
  # The teacher first, alone: parallel jobs would wait on its lock anyway.
  $DISTILL train "${COMMON[@]}" method=supervised_kd trainer.max_steps=1 eval.compare_teacher=true \
    hydra.run.dir="$OUT/teacher"
  stamp "teacher bootstrapped and scored"
  sweep starts method=supervised_kd trainer.max_steps=1 task.start_examples="$STARTS" \
    student.bootstrap.trainer.max_steps="$START_STEPS"
  stamp "starts scored"
  $DISTILL report "$OUT/teacher" "$OUT/starts" --out "$OUT/report_start"
  exit 0
fi
sweep lr_gkd method=gkd method.lmbda=1 trainer.lr="$LRS" seed=0
sweep lr_seqkd method=seqkd trainer.lr="$LRS" seed=0
stamp "learning rates"
XKD=(method=xkd method.lmbda=1 method.diagnostics_every=10)
sweep xkd_prior "${XKD[@]}" method.prior_std=1.0,10.0 seed=0,1
sweep xkd_variants "${XKD[@]}" method.alpha=0.5 seed=0
sweep xkd_sarsa "${XKD[@]}" method.td_target=sarsa seed=0
sweep xkd_oracle "${XKD[@]}" method.reward_source=oracle,rkl seed=0
sweep gkd_base method=gkd method.lmbda=1 seed=1
stamp "X-KD diagnostics"
$DISTILL report "$OUT"/lr_* "$OUT"/xkd_* "$OUT"/gkd_base --out "$OUT/report_tune" --baseline gkd
stamp "report written to $OUT/report_tune"
