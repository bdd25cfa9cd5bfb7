#!/usr/bin/env bash
# The X-KD revision-2 study in the few-labels testbed (issue 15; results in docs/results/xkd_rev2/).
#
#   bash scripts/xkd_study.sh [OUT_DIR]        # default outputs/xkd_study; from a cold cache on 2 CPU cores
#
# The testbed (conf/experiment/distill_testbed.yaml): the arith task with 1 % of its labels (200 problems),
# the other 19 800 problems as prompts only; the default 4×128 tiny teacher (bootstrapped on every label);
# a 2×128 student from a 300-step SFT on the labelled problems; 300 distillation steps of 32 at lr 1e-3;
# greedy accuracy on the first 300 test problems. Phases:
#   1. every method × SEEDS from that start: sft, supervised_kd (200 labels), seqkd, gkd (λ = 1), minillm
#      (ptx_weight = 0: sampling only, so it uses every prompt too), xkd (revision 2 defaults, on gkd λ = 1);
#   2. X-KD ablations × ABLATION_SEEDS: base seqkd; q_form shaped; revision 1 (q_form logits, revision 1's
#      Q-values, with a σ floor equivalent to revision 1's clamp); α = 0.5 (α = 0 is exactly the base, tested,
#      and 0.1 the default of phase 1);
#   3. the performance–diversity trade-off: each method's seed-0 run sampled 4 times per prompt at
#      T ∈ {0.5, 1, 1.5} (accuracy and Self-BLEU);
#   4. data efficiency: gkd and xkd at other labelled fractions (FRACTIONS) × ABLATION_SEEDS;
#   5. `distill report` with paired per-seed differences against sft, gkd and seqkd.
# Environment (the CI test shrinks these): SEEDS, ABLATION_SEEDS, FRACTIONS (comma lists), STEPS, EVAL,
# BOOTSTRAP_STEPS (default: the preset's), JOBS (parallel jobs, one thread each), EXTRA (more overrides).
# Re-running resumes: finished runs are not retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/chains.sh
OUT=${1:-outputs/xkd_study}
DISTILL=${DISTILL:-.venv/bin/distill}
SEEDS=${SEEDS:-0,1,2,3,4}
ABLATION_SEEDS=${ABLATION_SEEDS:-0,1,2}
FRACTIONS=${FRACTIONS:-0.05}
EVAL=${EVAL:-300}
JOBS=${JOBS:-2}
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# The preset's sizes; a shrunken run (CI) overrides them, and only then do they appear in run-dir names.
COMMON=(experiment=distill_testbed trainer.progress=false eval.progress=false "${EXTRA_ARGS[@]}")
[ -n "${STEPS:-}" ] && COMMON+=(trainer.max_steps="$STEPS")
[ -n "${BOOTSTRAP_STEPS:-}" ] && COMMON+=(student.bootstrap.trainer.max_steps="$BOOTSTRAP_STEPS")
[ "$EVAL" != 300 ] && COMMON+=(task.max_eval_examples="$EVAL")
PARALLEL=()
[ "$JOBS" -gt 1 ] && PARALLEL=(hydra/launcher=local_parallel hydra.launcher.n_jobs="$JOBS")
start=$(date +%s)
stamp() { echo "[xkd_study] $1 after $(( $(date +%s) - start )) s"; }
sweep() { local name=$1; shift; $DISTILL train -m "${COMMON[@]}" ${PARALLEL[@]+"${PARALLEL[@]}"} hydra.sweep.dir="$OUT/$name" "$@"; }

# 0. The teacher and the SFT student, bootstrapped once before parallel jobs would wait on their lock, and
#    scored: one supervised_kd step at warm-up lr (the start, in the report as trainer.max_steps=1) and the teacher.
$DISTILL train "${COMMON[@]}" method=supervised_kd trainer.max_steps=1 eval.compare_teacher=true \
  hydra.run.dir="$OUT/start"
stamp "teacher and student bootstrapped and scored"

# 1. Every method × SEEDS from the same start (on-policy methods use every prompt).
sweep methods method=sft,supervised_kd,seqkd seed="$SEEDS"
sweep methods_gkd method=gkd method.lmbda=1 seed="$SEEDS"
sweep methods_minillm method=minillm method.ptx_weight=0 seed="$SEEDS"
sweep methods_xkd method=xkd method.lmbda=1 seed="$SEEDS"
stamp "methods × seeds trained and evaluated"

# 2–4 run as two chains of about equal cost, one job each (JOBS >= 2), so no core idles beside the
#    last job of a sweep; with JOBS=1 one after the other.
serial() { local name=$1; shift; $DISTILL train -m "${COMMON[@]}" hydra.sweep.dir="$OUT/$name" "$@"; }
tradeoff() {  # 3. each method's seed-0 run sampled (the paths of one chain: every other run)
  local parity=$1 i=0
  for config in $(grep -l -x "seed: 0" $(find "$OUT"/methods* -name run_config.yaml) | sort); do  # long run-dir names are hashed
    i=$((i + 1)); [ $((i % 2)) = "$parity" ] || continue
    $DISTILL eval ckpt="$(dirname "$config")" eval.num_samples=4 "eval.sampling_temperatures=[0.5,1.0,1.5]" \
      task.max_eval_examples="$EVAL" eval.progress=false
  done
}
chain_a() {  # 2. X-KD on the seqkd base and revision 1; 3. half the trade-off; 4. gkd over labelled fractions
  serial ablation_base method=xkd method.base=seqkd seed="$ABLATION_SEEDS"
  serial ablation_revision1 method=xkd method.lmbda=1 method.q_form=logits method.min_reward_std=0.0067 \
    seed="$ABLATION_SEEDS"
  tradeoff 0
  serial efficiency_gkd method=gkd method.lmbda=1 task.labeled_fraction="$FRACTIONS" seed="$ABLATION_SEEDS"
}
chain_b() {  # 2. X-KD with shaped Q and α = 0.5; 3. the other half; 4. xkd over labelled fractions
  serial ablation_q_form method=xkd method.lmbda=1 method.q_form=shaped seed="$ABLATION_SEEDS"
  serial ablation_alpha method=xkd method.lmbda=1 method.alpha=0.5 seed="$ABLATION_SEEDS"
  tradeoff 1
  serial efficiency_xkd method=xkd method.lmbda=1 task.labeled_fraction="$FRACTIONS" seed="$ABLATION_SEEDS"
}
run_chains "$OUT" chain_a chain_b
stamp "X-KD ablations, temperature sweep and data-efficiency sweep done"

# 5. The report: means, standard errors and paired differences against sft, gkd and seqkd.
$DISTILL report "$OUT"/start "$OUT"/methods* "$OUT"/ablation_* "$OUT"/efficiency* --out "$OUT/report" \
  --baseline sft --baseline gkd --baseline seqkd
stamp "report written to $OUT/report"
echo "[xkd_study] wall time $(( $(date +%s) - start )) s"
