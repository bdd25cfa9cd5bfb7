#!/usr/bin/env bash
# Online speculative decoding at tiny scale (issue 11; results in docs/results/osd/).
#
#   bash scripts/osd_study.sh [OUT_DIR]      # default outputs/osd_study; from a cold cache on 2 CPU cores
#
# The arith train split, laid out as a deployment: problems 0–8 999 are distribution A (the draft's SFT data:
# task.labeled_fraction=0.45), 9 000–9 599 more A the draft never saw, 9 600 on distribution B
# (task.generator.shift: multiplications only, factors up to 9, larger numbers). The target is the default
# 4×128 tiny teacher bootstrapped on the whole split (A and B); the draft the 2×64 tiny student after 1 000 SFT
# steps on A. The stream: 2 400 requests from problem 9 000 on (600 unseen A, then 1 800 B), served greedily
# with k = 4 proposals. Compared on that stream, α per request:
#   before    the SFT draft, serving without learning (method.update=false);
#   offline   drafts distilled before serving by supervised_kd and by gkd (λ = 1) on A, with OSD's budget
#             (300 optimizer steps of 8), then serving without learning;
#   osd       the SFT draft distilled online: an update every 8 requests on every generated position
#             (method.positions=all), and on the mismatched positions only (osd_mismatch; the OSD paper's choice);
#   ARMS (issue 22, on when ARMS=all): osd_mismatch_replay (mismatch positions, the last 16 requests replayed:
#             about as many tokens per update as osd), osd_anchored (every position, the accepted ones at weight
#             0.25), and sampled serving at T = 1: before_sampled, osd_sampled (all positions),
#             osd_mismatch_sampled. Greedy serving's measure is the accepted fraction, sampled serving's α.
# Greedy serving, stream order and updates have no randomness: one run per variant. The speedups are measured
# last, one evaluation at a time, so no other job shares the CPU with the timings.
# Then `distill eval` with each final draft against the target on the test split (A): acceptance rate,
# speedup_model (cost ratio c measured) and speedup_measured on this CPU; and `distill report` over the stream.
# Environment (the CI test shrinks these): STEPS, EVAL, SHIFT_AT, STREAM_START, BOOTSTRAP_STEPS, OFFLINE, JOBS, EXTRA (overrides
# for training runs), EVAL_EXTRA (overrides for `distill eval`), DISTILL and PYTHON (the commands).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/chains.sh
OUT=${1:-outputs/osd_study}
DISTILL=${DISTILL:-.venv/bin/distill}
STEPS=${STEPS:-300}
EVAL=${EVAL:-100}
SHIFT_AT=${SHIFT_AT:-9600}            # the first train problem from distribution B
STREAM_START=${STREAM_START:-9000}    # the stream's first request
BOOTSTRAP_STEPS=${BOOTSTRAP_STEPS:-1000}
OFFLINE=${OFFLINE:-supervised_kd gkd}  # the offline distillation methods compared
ARMS=${ARMS:-}                          # all: the issue-22 arms too (replay, anchored, sampled serving)
JOBS=${JOBS:-2}                         # parallel chains of runs (each one thread)
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"            # overrides for training runs (the CI test shrinks models)
read -r -a EVAL_EXTRA_ARGS <<< "${EVAL_EXTRA:-}"  # overrides for `distill eval` (eval.* and task.* keys only)
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models: one thread is fastest
SHIFT=("task.generator.shift={at:$SHIFT_AT,operations:[mul],max_factor:9}" task.labeled_fraction=0.45)
DRAFT=(student.bootstrap.enabled=true +student.bootstrap.trainer.max_steps=$BOOTSTRAP_STEPS)
COMMON=("${SHIFT[@]}" trainer.progress=false eval.progress=false trainer.lr=1e-3 trainer.warmup_steps=20
        trainer.log_every=10 trainer.save_every=1000 ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"})
SERVE=(method=osd method.stream_start=$STREAM_START method.update_interval=8 trainer.max_steps="$STEPS")
start=$(date +%s)
stamp() { echo "[osd_study] $1 after $(( $(date +%s) - start )) s"; }

# The draft before OSD (bootstraps teacher and draft on the first run), then OSD itself.
$DISTILL train "${COMMON[@]}" "${DRAFT[@]}" "${SERVE[@]}" method.update=false hydra.run.dir="$OUT/stream/before"
stamp "the SFT draft served the stream"

# OSD itself and the offline drafts (the same budget on A only: task.train_fraction=0.45, the first 9 000
# problems, then served), as two chains of about equal cost when JOBS >= 2 (one thread each).
offline() {
  local method=$1 extra=(); [ "$method" = gkd ] && extra=(method.lmbda=1)
  $DISTILL train "${COMMON[@]}" "${DRAFT[@]}" method=$method "${extra[@]}" task.train_fraction=0.45 \
    trainer.micro_batch_size=8 trainer.max_steps="$STEPS" hydra.run.dir="$OUT/offline/$method"
  $DISTILL train "${COMMON[@]}" "${SERVE[@]}" method.update=false student.pretrained="$OUT/offline/$method/final" \
    student.config=null student.bootstrap.enabled=false hydra.run.dir="$OUT/stream/offline_$method"
}
read -r -a METHODS <<< "$OFFLINE"
chain_a() {  # OSD on every generated position, then the first offline method when there are several
  $DISTILL train "${COMMON[@]}" "${DRAFT[@]}" "${SERVE[@]}" method.positions=all hydra.run.dir="$OUT/stream/osd"
  if [ ${#METHODS[@]} -gt 1 ]; then offline "${METHODS[0]}"; fi
}
chain_b() {  # OSD on the mismatched positions only (the paper's choice, our default), the other offline methods
  local first=0 m
  $DISTILL train "${COMMON[@]}" "${DRAFT[@]}" "${SERVE[@]}" method.positions=mismatch \
    hydra.run.dir="$OUT/stream/osd_mismatch"
  [ ${#METHODS[@]} -gt 1 ] && first=1
  for m in "${METHODS[@]:$first}"; do offline "$m"; done
}
arm() { local name=$1; shift; $DISTILL train "${COMMON[@]}" "${DRAFT[@]}" "${SERVE[@]}" "$@" hydra.run.dir="$OUT/stream/$name"; }
SAMPLED=(method.sampling_temperature=1.0)
chain_c() {
  arm osd_mismatch_replay method.positions=mismatch method.replay_size=16
  arm before_sampled method.update=false "${SAMPLED[@]}"
  arm osd_mismatch_sampled method.positions=mismatch "${SAMPLED[@]}"
}
chain_d() {
  arm osd_anchored method.positions=anchored method.anchor_weight=0.25
  arm osd_sampled method.positions=all "${SAMPLED[@]}"
}
run_chains "$OUT" chain_a chain_b
[ "$ARMS" = all ] && run_chains "$OUT" chain_c chain_d
stamp "OSD and the offline drafts served the stream"

# Speedup on this CPU, alone on the machine: each draft against the target on the test split.
PY=${PYTHON:-.venv/bin/python}
teacher=$($PY -c "import json; print(json.load(open('$OUT/stream/before/summary.json'))['teacher_id'])")
[ -d "$OUT/target" ] || cp -r "$teacher" "$OUT/target"  # the target this study bootstrapped, beside its results
for draft in before osd osd_mismatch ${METHODS[@]+$(printf "offline_%s " "${METHODS[@]}")}; do
  $DISTILL eval ckpt="$OUT/target" "eval.speculative.draft=$OUT/stream/$draft/final" eval.speculative.num_proposals=4 \
    task.max_eval_examples="$EVAL" "${SHIFT[@]}" eval.progress=false hydra.run.dir="$OUT/speedup/$draft" \
    ${EVAL_EXTRA_ARGS[@]+"${EVAL_EXTRA_ARGS[@]}"}
done
stamp "speedups measured"

$DISTILL report "$OUT/stream" --out "$OUT/report"
# PLAN.md's OSD criteria (docs/results/testbed_v2): every arm against the draft before OSD, the mismatch arm's cost
[ "$ARMS" = all ] && $PY scripts/osd_criteria.py "$OUT" --json "$OUT/criteria.json" > "$OUT/criteria.md"
stamp "report written to $OUT/report"
echo "[osd_study] wall time $(( $(date +%s) - start )) s"
