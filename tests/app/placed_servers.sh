#!/bin/bash
# Placed training as real processes: `mpirun -np 3 mel train ... --placement servers` (one
# process per server) must end with the weights and optimizer state of a one-process run, byte
# for byte, also resumed and with failout; a world of the wrong size and ranks started with
# different configs are clear errors.
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

expect_error() {  # expect_error TEXT COMMAND...: fails unless COMMAND fails and prints TEXT
  local text=$1
  shift
  if "$@" >"$tmp/err.log" 2>&1; then echo "FAIL: '$*' succeeded"; exit 1; fi
  grep -qF "$text" "$tmp/err.log" || { echo "FAIL: no '$text' in:"; cat "$tmp/err.log"; exit 1; }
}
expect_error "needs 3 ranks" \
  "$mpiexec" -np 2 --oversubscribe "$mel" train "$cfg" --out "$tmp/x" --placement servers
sed 's/"seed": 5/"seed": 6/' "$cfg" >"$tmp/other.json"
expect_error "rank(s) 2 run another config" \
  "$mpiexec" -np 2 --oversubscribe "$mel" train "$cfg" --out "$tmp/x" --placement servers : \
  -np 1 "$mel" train "$tmp/other.json" --out "$tmp/x" --placement servers
[[ ! -e $tmp/x ]] || { echo "FAIL: a failed placed run left a run folder"; exit 1; }
echo "placed servers: 3 processes equal one process byte for byte (fresh, resumed, failout)"
