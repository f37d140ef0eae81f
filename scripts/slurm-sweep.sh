#!/usr/bin/env bash
# Runs one attention-lab experiment as a Slurm job array, then merges it.
#
#   scripts/slurm-sweep.sh EXPERIMENT SHARDS [EXPERIMENT FLAGS...]
#
# From a login node, in a checkout on a filesystem every node sees, after `cargo build --release`:
#
#   scripts/slurm-sweep.sh scaling 8 --set run.seeds=24
#
# submits two jobs:
#   1. an array of SHARDS tasks; task I runs `scaling --shard auto --sweep-id ID`, which reads
#      Slurm's SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT and trains only shard I's training
#      runs, into $RESULTS/scaling/ID/shard-I-of-SHARDS/. A task that is pre-empted and requeued
#      resumes: the runs it stored are read back, not trained again.
#   2. the merge, started only when every task succeeded (--dependency=afterok):
#      `reproduce --merge $RESULTS/scaling/ID` writes the run folder that one unsharded run
#      would have written there (same metrics.csv, plots, models and verdicts), and
#      $RESULTS/index.html.
# If a task fails, the merge never starts: rerun that shard by hand (`scaling --shard I/SHARDS
# --sweep-id ID ...`), then run the merge command the script printed.
#
# Settings, from the environment:
#   SWEEP_ID   the sweep's name, shared by every shard (default EXPERIMENT-<UTC time>)
#   RESULTS    the results root (default: results)
#   BIN        where the release binaries are (default: target/release, or $CARGO_TARGET_DIR/release)
#   SBATCH     the sbatch command (default: sbatch); sbatch itself reads SBATCH_PARTITION,
#              SBATCH_TIMELIMIT, SBATCH_ACCOUNT and the rest for the cluster's own settings
#   ARRAY_OPTS extra sbatch options for the array only, e.g. "--cpus-per-task=8 --gres=gpu:1"
set -euo pipefail

if [ $# -lt 2 ]; then
  # The header comment above, without its '#'.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
experiment=$1
shards=$2
shift 2
case "$shards" in
  '' | *[!0-9]* | 0) echo "error: SHARDS must be a whole number from 1, got '$shards'" >&2; exit 2 ;;
esac
sweep_id=${SWEEP_ID:-$experiment-$(date -u +%Y%m%dT%H%M%SZ)}
results=${RESULTS:-results}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release}
sbatch=${SBATCH:-sbatch}
for program in "$experiment" reproduce; do
  if [ ! -x "$bin/$program" ]; then
    echo "error: $bin/$program is not built: run cargo build --release (or set BIN)" >&2
    exit 2
  fi
done

# Quoted once here, so flags with spaces reach the experiment intact through --wrap.
flags=$(printf ' %q' "$@")
mkdir -p "$results/slurm"
array_job=$($sbatch --parsable --array="0-$((shards - 1))" ${ARRAY_OPTS:-} \
  --job-name="attention-lab-$experiment" --output="$results/slurm/%x-%A_%a.out" \
  --wrap "$(printf '%q' "$bin/$experiment") --shard auto --sweep-id $(printf '%q' "$sweep_id") --out $(printf '%q' "$results")$flags")
array_job=${array_job%%;*}
merge="$(printf '%q' "$bin/reproduce") --merge $(printf '%q' "$results/$experiment/$sweep_id")"
merge_job=$($sbatch --parsable --dependency="afterok:$array_job" \
  --job-name="attention-lab-$experiment-merge" --output="$results/slurm/%x-%j.out" \
  --wrap "$merge")
echo "sweep $sweep_id: array job $array_job ($shards shards), merge job ${merge_job%%;*}"
echo "shards write to $results/$experiment/$sweep_id/shard-I-of-$shards/; logs in $results/slurm/"
echo "merge by hand, if needed: $merge"
