#!/usr/bin/env bash
# The pre-registered study on testbed v2 (issue 22; plan and results in docs/results/testbed_v2/).
#
#   bash scripts/testbed_study.sh TASK [OUT_DIR]   # TASK = arith | lingua; default OUT_DIR outputs/study_TASK
#
# Settings come from conf/experiment/testbed_TASK.yaml (chosen on validation by scripts/testbed_pilot.sh);
# every run here is scored once, on the test split. Equal data: every arm trains on the same labelled
# problems after the student's own SFT start. Phases:
#   0. the start (the SFT student, one step at warm-up lr) and the teacher, scored; the teacher's repair rate
#      on the start's wrong outputs (scripts/teacher_on_student_prefixes.py);
#   1. the arms × SEEDS: sft (reference), supervised_kd on gold targets, seqkd, supervised KD on teacher
#      outputs (gkd λ = 0 with seq_kd), gkd at λ = 0.5 and 1, minillm, xkd at its defaults on the gkd λ = 1 base, and at σ0 = 1 (secondary); the oracle arm
#      (reward_source=oracle) and the closed-form control (reward_source=rkl) × CONTROL_SEEDS;
#   2. data efficiency: gkd (λ = 1) and xkd at 2 000 and 5 000 of the 20 000 problems (task.train_fraction
#      FRACTIONS) × EFFICIENCY_SEEDS, from the same start (the 20 000 point is phase 1);
#   3. the performance–diversity trade-off (TRADEOFF=1, lingua): every arm's runs of TRADEOFF_SEEDS sampled
#      4 times per prompt at T ∈ {0.5, 1, 1.5} on the first TRADEOFF_EVAL test problems (metric, Self-BLEU,
#      Distinct-n);
#   4. `distill report` with paired per-seed differences against gkd and seqkd.
# Phases 1–3 run as two chains of about equal cost (JOBS >= 2, one thread each). Re-running resumes.
# Environment (the CI test shrinks these): SEEDS, CONTROL_SEEDS, EFFICIENCY_SEEDS, FRACTIONS, TRADEOFF,
# TRADEOFF_SEEDS, TRADEOFF_EVAL, STEPS, EVAL, BOOTSTRAP_STEPS, REPAIR_EXAMPLES, JOBS, EXTRA.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/chains.sh
TASK=${1:?usage: bash scripts/testbed_study.sh arith|lingua [OUT_DIR]}
OUT=${2:-outputs/study_$TASK}
DISTILL=${DISTILL:-.venv/bin/distill}
PY=${PYTHON:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2,3,4}
CONTROL_SEEDS=${CONTROL_SEEDS:-0,1,2}
EFFICIENCY_SEEDS=${EFFICIENCY_SEEDS:-0,1,2}
FRACTIONS=${FRACTIONS:-0.1,0.25}
TRADEOFF=${TRADEOFF:-$([ "$TASK" = lingua ] && echo 1 || echo 0)}
TRADEOFF_SEEDS=${TRADEOFF_SEEDS:-0 1 2}
TRADEOFF_EVAL=${TRADEOFF_EVAL:-300}
REPAIR_EXAMPLES=${REPAIR_EXAMPLES:-600}
JOBS=${JOBS:-2}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
COMMON=(experiment="testbed_$TASK" eval.split=test trainer.progress=false eval.progress=false "${EXTRA_ARGS[@]}")
[ -n "${STEPS:-}" ] && COMMON+=(trainer.max_steps="$STEPS")
[ -n "${BOOTSTRAP_STEPS:-}" ] && COMMON+=(student.bootstrap.trainer.max_steps="$BOOTSTRAP_STEPS")
[ -n "${EVAL:-}" ] && COMMON+=(task.max_eval_examples="$EVAL")
mkdir -p "$OUT"
start=$(date +%s)
stamp() { echo "[testbed_study $TASK] $1 after $(( $(date +%s) - start )) s"; }
serial() { local name=$1; shift; $DISTILL train -m "${COMMON[@]}" hydra.sweep.dir="$OUT/$name" "$@"; }

# 0. The teacher and the start, bootstrapped once (parallel jobs would wait on their locks) and scored.
$DISTILL train "${COMMON[@]}" method=supervised_kd trainer.max_steps=1 eval.compare_teacher=true \
  hydra.run.dir="$OUT/start"
read -r teacher student < <($PY -c "import json; s = json.load(open('$OUT/start/summary.json')); \
print(s['teacher_id'], s['student_init'])")
[ -f "$OUT/repair.json" ] || $PY scripts/teacher_on_student_prefixes.py --teacher "$teacher" --student "$student" \
  --task "$TASK" --experiment "testbed_$TASK" --split test --examples "$REPAIR_EXAMPLES" --out "$OUT/repair.json" \
  "${EXTRA_ARGS[@]}" > /dev/null
stamp "teacher and start bootstrapped and scored, repair rate measured"

run_task() {  # the overrides that rebuild a run's generated task for `distill eval` (its name and generator knobs)
  $PY -c "import sys, yaml; t = yaml.safe_load(open(sys.argv[1]))['task']; \
print(f\"task={t['name']}\"); [print(f'task.generator.{k}=' + yaml.safe_dump(v, default_flow_style=True, \
width=1e9).strip().removesuffix('...').strip().replace(' ', '')) for k, v in t['generator'].items() if k != 'kind']" "$1"
}
tradeoff() {  # 3. the named sweeps' runs of TRADEOFF_SEEDS, sampled at three temperatures
  [ "$TRADEOFF" = 1 ] || return 0
  local sweep config seed
  for sweep in "$@"; do
    for seed in $TRADEOFF_SEEDS; do
      for config in $(grep -l -x "seed: $seed" $(find "$OUT/$sweep" -name run_config.yaml) | sort); do
        mapfile -t task < <(run_task "$config")
        $DISTILL eval ckpt="$(dirname "$config")" "${task[@]}" eval.split=test eval.num_samples=4 \
          "eval.sampling_temperatures=[0.5,1.0,1.5]" task.max_eval_examples="$TRADEOFF_EVAL" eval.progress=false
      done
    done
  done
}
chain_a() {
  serial sft method=sft seed="$SEEDS"
  serial supervised_kd method=supervised_kd seed="$SEEDS"
  serial kd_teacher_outputs method=gkd method.lmbda=0 method.seq_kd=true seed="$SEEDS"
  serial gkd method=gkd method.lmbda=1 seed="$SEEDS"
  serial xkd_prior1 method=xkd method.lmbda=1 method.prior_std=1.0 seed="$SEEDS"  # secondary (PLAN.md amendment 2)
  serial xkd_oracle method=xkd method.lmbda=1 method.reward_source=oracle seed="$CONTROL_SEEDS"
  serial efficiency_gkd method=gkd method.lmbda=1 task.train_fraction="$FRACTIONS" seed="$EFFICIENCY_SEEDS"
  tradeoff sft supervised_kd kd_teacher_outputs gkd
}
chain_b() {
  serial seqkd method=seqkd seed="$SEEDS"
  serial gkd_half method=gkd method.lmbda=0.5 seed="$SEEDS"
  serial minillm method=minillm seed="$SEEDS"
  serial xkd method=xkd method.lmbda=1 seed="$SEEDS"
  serial xkd_control method=xkd method.lmbda=1 method.reward_source=rkl seed="$CONTROL_SEEDS"
  serial efficiency_xkd method=xkd method.lmbda=1 task.train_fraction="$FRACTIONS" seed="$EFFICIENCY_SEEDS"
  tradeoff seqkd gkd_half minillm xkd
}
run_chains "$OUT" chain_a chain_b
stamp "arms, controls, data efficiency and trade-off done"

# 4. The report: means, SEs and paired differences against gkd and seqkd.
$DISTILL report "$OUT"/start "$OUT"/sft "$OUT"/supervised_kd "$OUT"/kd_teacher_outputs "$OUT"/gkd "$OUT"/xkd_prior1 "$OUT"/xkd_oracle \
  "$OUT"/efficiency_gkd "$OUT"/seqkd "$OUT"/gkd_half "$OUT"/minillm "$OUT"/xkd "$OUT"/xkd_control \
  "$OUT"/efficiency_xkd --out "$OUT/report" --baseline gkd --baseline seqkd
$PY scripts/testbed_criteria.py "$OUT" > "$OUT/criteria.md"  # PLAN.md's criteria, met or not
stamp "report written to $OUT/report, criteria to $OUT/criteria.md"
echo "[testbed_study $TASK] wall time $(( $(date +%s) - start )) s"
