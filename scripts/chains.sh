# Sourced by the study scripts: run shell functions as parallel chains of jobs.
# run_chains DIR FUNCTION...: with JOBS >= 2 each function runs in the background, its output in
# DIR/FUNCTION.log, and a failed chain stops the script with one line naming its log; with JOBS=1 they run
# one after the other in the foreground. Chains of about equal cost keep every core busy to the end.
run_chains() {
  local dir=$1 f i=0 pids=()
  shift
  if [ "${JOBS:-1}" -le 1 ]; then
    for f in "$@"; do "$f"; done
    return
  fi
  for f in "$@"; do "$f" > "$dir/$f.log" 2>&1 & pids+=($!); done
  for f in "$@"; do
    wait "${pids[$i]}" || { echo "error: $f failed; see $dir/$f.log" >&2; exit 1; }
    i=$((i + 1))
  done
}
