#!/usr/bin/env bash
# The pilot of the X-KD revision-2 issue (docs/results/xkd_rev2/pilot.md): why on-policy distillation
# from a good teacher hurt the student, and which regime lets distillation show.
#
#   bash scripts/xkd_pilot.sh [OUT_DIR]      # default outputs/xkd_pilot; about 50 min on 2 CPU cores
#
# One seed unless a name says otherwise; greedy accuracy on the first 300 arith test problems; the default
# bootstrapped 4×128 teacher (92 %). Groups:
#   full_*   all labels: a 2×128 student after 1 000 SFT steps, 300 more steps of sft / supervised_kd /
#            gkd λ=1 (fkl) at lr 1e-4 … 2e-3, weight decay 0 (and the issue's 2e-3 with weight decay 0.01);
#            gkd variants at 2e-3: sampling T = 0.5, reverse KL, λ = 0.5;
#   copy_*   the student a copy of the teacher, 40 steps of gkd λ=1 at lr 2e-3, weight decay 0.01 and 0;
#   few_*    1 % labels (200 problems) and 19 800 prompts, a 300-step SFT start on the 200: sft,
#            supervised_kd, seqkd, gkd λ=1 at lr 3e-4, 1e-3, 2e-3, seeds 0 and 1; 5 % labels for contrast;
#   prefixes_*.json  the teacher finishing the full-label student's greedy and sampled prefixes
#            (scripts/teacher_on_student_prefixes.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/xkd_pilot}
DISTILL=${DISTILL:-.venv/bin/distill}
JOBS=${JOBS:-2}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
COMMON="student.config.n_embd=128 student.config.n_head=4 student.bootstrap.enabled=true trainer.max_steps=300
        trainer.warmup_steps=20 eval.after_train=true task.max_eval_examples=300 trainer.progress=false
        eval.progress=false"
COMMON=$(echo $COMMON)  # one line: each job below is one line for xargs
FULL="$COMMON +student.bootstrap.trainer.max_steps=1000"
FEW="$COMMON +student.bootstrap.trainer.max_steps=300"
start=$(date +%s)

job() {  # NAME OVERRIDES...: one run, its log beside it
  local name=$1; shift
  [ -f "$OUT/$name/summary.json" ] || $DISTILL train "$@" hydra.run.dir="$OUT/$name" > "$OUT/$name.log" 2>&1
}
export -f job
export OUT DISTILL

# Bootstraps first (teacher, both students), so parallel jobs never wait on their lock.
job full_sft_lr2e-3_wd0.01 method=sft $FULL trainer.weight_decay=0.01
job few_sft_lr1e-3_s0 method=sft $FEW task.labeled_fraction=0.01 trainer.lr=1e-3

{
  echo "full_skd_lr2e-3_wd0.01 method=supervised_kd $FULL trainer.weight_decay=0.01"
  echo "full_gkd_lr2e-3_wd0.01 method=gkd method.lmbda=1 $FULL trainer.weight_decay=0.01"
  for lr in 1e-4 3e-4 1e-3 2e-3; do
    echo "full_sft_lr$lr method=sft $FULL trainer.lr=$lr"
    echo "full_skd_lr$lr method=supervised_kd $FULL trainer.lr=$lr"
    echo "full_gkd_lr$lr method=gkd method.lmbda=1 $FULL trainer.lr=$lr"
  done
  echo "full_gkd_T0.5 method=gkd method.lmbda=1 method.sampling_temperature=0.5 $FULL trainer.lr=2e-3"
  echo "full_gkd_rkl method=gkd method.lmbda=1 divergence=rkl $FULL trainer.lr=2e-3"
  echo "full_gkd_lmbda0.5 method=gkd method.lmbda=0.5 $FULL trainer.lr=2e-3"
  for lr in 3e-4 1e-3 2e-3; do
    for seed in 0 1; do
      echo "few_sft_lr${lr}_s$seed method=sft $FEW task.labeled_fraction=0.01 trainer.lr=$lr seed=$seed"
      echo "few_gkd_lr${lr}_s$seed method=gkd method.lmbda=1 $FEW task.labeled_fraction=0.01 trainer.lr=$lr seed=$seed"
    done
  done
  for seed in 0 1; do
    echo "few_skd_lr1e-3_s$seed method=supervised_kd $FEW task.labeled_fraction=0.01 trainer.lr=1e-3 seed=$seed"
    echo "few_seqkd_lr1e-3_s$seed method=seqkd $FEW task.labeled_fraction=0.01 trainer.lr=1e-3 seed=$seed"
    echo "five_sft_lr1e-3_s$seed method=sft $FEW task.labeled_fraction=0.05 trainer.lr=1e-3 seed=$seed"
    echo "five_gkd_lr1e-3_s$seed method=gkd method.lmbda=1 $FEW task.labeled_fraction=0.05 trainer.lr=1e-3 seed=$seed"
    echo "five_seqkd_lr1e-3_s$seed method=seqkd $FEW task.labeled_fraction=0.05 trainer.lr=1e-3 seed=$seed"
  done
} | grep -v "^few_sft_lr1e-3_s0 " | xargs -P "$JOBS" -L 1 bash -c 'job "$@"' _

# The student a copy of the teacher: does it stay put?
teacher=$(ls -d "${DISTILL_CACHE:-outputs/cache}"/bootstrap/teacher-tiny-*/final | head -1)
for wd in 0.01 0; do
  job "copy_wd$wd" method=gkd method.lmbda=1 student.pretrained="$teacher" student.config=null \
    student.bootstrap.enabled=false trainer.max_steps=40 trainer.warmup_steps=20 trainer.weight_decay=$wd \
    eval.after_train=true task.max_eval_examples=300 trainer.progress=false eval.progress=false
done

# The teacher finishing the full-label student's prefixes.
student=$(python3 -c "import json,sys; print(json.load(open('$OUT/full_sft_lr2e-3_wd0.01/summary.json'))['student_init'])")
PY=${PYTHON:-.venv/bin/python}
$PY scripts/teacher_on_student_prefixes.py --teacher "$teacher" --student "$student" > "$OUT/prefixes_greedy.json"
$PY scripts/teacher_on_student_prefixes.py --teacher "$teacher" --student "$student" --temperature 1.0 \
  > "$OUT/prefixes_t1.json"

# One line per run: name and greedy accuracy.
for log in "$OUT"/*.log; do
  echo "$(basename "$log" .log) $(grep -E '│ student' "$log" | tr -s ' ' | cut -d'│' -f5 | head -1)"
done | sort > "$OUT/accuracy.txt"
cat "$OUT/accuracy.txt"
echo "[xkd_pilot] wall time $(( $(date +%s) - start )) s"
