#!/bin/bash
# Placed training as real processes: `mpirun -np 3 mel train ... --placement servers` (one
# process per server) must end with the weights and optimizer state of a one-process run, byte
# for byte, also resumed and with failout; 2 replicas as 6 processes equal 6 threads; a world of
# the wrong size and ranks started with different configs are clear errors; a rank that hangs or
# dies ends the job within seconds and the last checkpoint stays usable.
# Usage: placed_servers.sh MEL MPIEXEC. Exit 77 (skipped) without Fashion-MNIST.
set -euo pipefail
mel=$1
mpiexec=$2
here=$(cd "$(dirname "$0")" && pwd)
if [[ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  echo "Fashion-MNIST not installed (package dataset-fashion-mnist): skipped"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=$here/placed_small.json

"$mel" train "$cfg" --out "$tmp/single" --no-progress >/dev/null
"$mpiexec" -np 3 --oversubscribe "$mel" train "$cfg" --out "$tmp/servers" --no-progress \
  --placement servers >"$tmp/servers.log" 2>&1 || { cat "$tmp/servers.log"; exit 1; }
for f in model.safetensors optimizer.safetensors; do
  cmp "$tmp/single/$f" "$tmp/servers/$f" || { echo "FAIL: $f differs from one process"; exit 1; }
done
grep -q '"backend": "mpi"' "$tmp/servers/report.json" || { echo "FAIL: no mpi placement in report"; exit 1; }

# stop after one epoch as processes, resume as processes: still the one-process result
"$mpiexec" -np 3 --oversubscribe "$mel" train "$cfg" --out "$tmp/resumed" --no-progress \
  --placement servers --stop-after 1 >/dev/null 2>&1
"$mpiexec" -np 3 --oversubscribe "$mel" train --resume "$tmp/resumed" --no-progress \
  --placement servers >/dev/null 2>&1
cmp "$tmp/single/model.safetensors" "$tmp/resumed/model.safetensors" ||
  { echo "FAIL: resumed run differs from one process"; exit 1; }

# with failout: the processes draw the same failures as one process
sed 's/"train": {/"train": {"failout": 0.3, /' "$cfg" >"$tmp/failout.json"
"$mel" train "$tmp/failout.json" --out "$tmp/failout_single" --no-progress >/dev/null
"$mpiexec" -np 3 --oversubscribe "$mel" train "$tmp/failout.json" --out "$tmp/failout_servers" \
  --no-progress --placement servers >/dev/null 2>&1
for f in model.safetensors optimizer.safetensors; do
  cmp "$tmp/failout_single/$f" "$tmp/failout_servers/$f" ||
    { echo "FAIL: $f with failout differs from one process"; exit 1; }
done

# two replicas of the placement (6 processes): the in-process run's weights, byte for byte
"$mel" train "$cfg" --out "$tmp/replicas_threads" --no-progress --placement threads \
  --replicas 2 >/dev/null
"$mpiexec" -np 6 --oversubscribe "$mel" train "$cfg" --out "$tmp/replicas_servers" \
  --no-progress --placement servers --replicas 2 >/dev/null 2>&1
cmp "$tmp/replicas_threads/model.safetensors" "$tmp/replicas_servers/model.safetensors" ||
  { echo "FAIL: 6 processes differ from 6 threads"; exit 1; }

# A rank that stops answering (SIGSTOP) after the first checkpoint: the others give up after
# --comm-timeout with an error naming it, mpirun ends the job, and the checkpoint stays usable.
rank_pid() {  # rank_pid RANK PATTERN: the pid of the MPI rank RANK whose command line has PATTERN
  local pid
  for pid in $(pgrep -f -- "$2"); do
    if tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then
      echo "$pid"
      return
    fi
  done
}
sed 's/"epochs": 2/"epochs": 50/' "$cfg" >"$tmp/long.json"
for signal in STOP KILL; do
  run=$tmp/fail_$signal
  "$mpiexec" -np 3 --oversubscribe "$mel" train "$tmp/long.json" --out "$run" --no-progress \
    --placement servers --comm-timeout 3 >"$run.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do [[ -e $run/model.safetensors ]] && break; sleep 0.1; done
  [[ -e $run/model.safetensors ]] || { echo "FAIL: no checkpoint"; cat "$run.log"; exit 1; }
  pid=$(rank_pid 0 "$run")
  [[ -n $pid ]] || { echo "FAIL: rank 0 of $run not found"; exit 1; }
  kill -"$signal" "$pid"
  start=$SECONDS
  if wait "$job"; then echo "FAIL: the run survived SIG$signal of rank 0"; exit 1; fi
  (( SECONDS - start < 60 )) || { echo "FAIL: SIG$signal: the job took $((SECONDS - start)) s to end"; exit 1; }
  if [[ $signal == STOP ]]; then
    grep -qE "(no message from rank 0|rank 0 took no message) within 3 s" "$run.log" ||
      { echo "FAIL: no error naming rank 0"; cat "$run.log"; exit 1; }
  fi
  "$mel" eval "$run" >/dev/null || { echo "FAIL: the checkpoint after SIG$signal is unusable"; exit 1; }
done

expect_error() {  # expect_error TEXT COMMAND...: fails unless COMMAND fails and prints TEXT
  local text=$1
  shift
  if "$@" >"$tmp/err.log" 2>&1; then echo "FAIL: '$*' succeeded"; exit 1; fi
  grep -qF "$text" "$tmp/err.log" || { echo "FAIL: no '$text' in:"; cat "$tmp/err.log"; exit 1; }
}
expect_error "needs 3 ranks" \
  "$mpiexec" -np 2 --oversubscribe "$mel" train "$cfg" --out "$tmp/x" --placement servers
expect_error "needs 6 ranks, but the mpi world has 4" \
  "$mpiexec" -np 4 --oversubscribe "$mel" train "$cfg" --out "$tmp/x" --placement servers \
  --replicas 2
sed 's/"seed": 5/"seed": 6/' "$cfg" >"$tmp/other.json"
expect_error "rank(s) 2 run another config" \
  "$mpiexec" -np 2 --oversubscribe "$mel" train "$cfg" --out "$tmp/x" --placement servers : \
  -np 1 "$mel" train "$tmp/other.json" --out "$tmp/x" --placement servers
[[ ! -e $tmp/x ]] || { echo "FAIL: a failed placed run left a run folder"; exit 1; }
echo "placed servers: 3 processes equal one process byte for byte (fresh, resumed, failout)"
