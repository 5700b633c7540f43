#!/bin/bash
# Kill-at-random-moments: a small training run (tests/app/placed_small.json, 4 epochs of 3 steps)
# is killed with SIGKILL at each named point of a checkpoint save (the MEL_TEST_KILL_AT hook:
# between the files' writes, the commit and the renames) and at random moments, then resumed with
# `mel train --resume` until it finishes. Every run must end with the model and optimizer files of
# an uninterrupted run, byte for byte, or resume must refuse with a clear error; anything else
# fails. A second `mel train` into a folder in use must be refused naming the holder's pid.
# Usage: kill_resume.sh MEL [ROUNDS [SEED]]. Exit 77 (skipped) without Fashion-MNIST.
set -uo pipefail
mel=$1
rounds=${2:-5}
seed=${3:-$(date +%s)}
here=$(cd "$(dirname "$0")" && pwd)
if [[ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  echo "Fashion-MNIST not installed (package dataset-fashion-mnist): skipped"
  exit 77
fi
RANDOM=$seed
echo "seed $seed (rerun with: $0 $mel $rounds $seed)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cfg=$here/placed_small.json
args=(--no-progress --epochs 4 --train-limit 192 --test-limit 64)
kills=0 identical=0 refused=0 failures=0 before_first=0

start=$(date +%s%N)
"$mel" train "$cfg" --out "$tmp/ref" "${args[@]}" >"$tmp/ref.log" 2>&1 ||
  { cat "$tmp/ref.log"; echo "FAIL: the uninterrupted run failed"; exit 1; }
ref_ms=$((($(date +%s%N) - start) / 1000000))
echo "the uninterrupted run takes $ref_ms ms"

# A finished run: its files equal the uninterrupted run's, or it is a failure.
check_result() {
  local d=$1 what=$2
  for f in model.safetensors optimizer.safetensors; do
    if ! cmp -s "$tmp/ref/$f" "$d/$f"; then
      echo "FAIL ($what): $f differs from the uninterrupted run"
      failures=$((failures + 1))
      return
    fi
  done
  identical=$((identical + 1))
}

# A resume that exited with an error: a clear refusal, or a failure.
check_refusal() {
  local log=$1 what=$2
  if grep -qE "mel: error: .*(do not belong together|no checkpoint here|non-finite|truncated|is missing)" "$log"; then
    refused=$((refused + 1))
    echo "refused ($what): $(grep 'mel: error' "$log" | head -1)"
  else
    echo "FAIL ($what): resume failed without a clear error:"
    cat "$log"
    failures=$((failures + 1))
  fi
}

has_checkpoint() {
  [[ -e $1/checkpoint.json || -e $1/model.safetensors ]]
}

# 1. A kill at each point of the save of epoch 2, then resume.
for point in after_optimizer_write after_model_write after_commit after_optimizer_rename \
  after_model_rename; do
  d=$tmp/point_$point
  { MEL_TEST_KILL_AT=$point@2 "$mel" train "$cfg" --out "$d" "${args[@]}" >"$d.log" 2>&1; } 2>/dev/null
  rc=$?
  if [[ $rc != 137 ]]; then
    echo "FAIL: the hook did not kill the run at $point (exit $rc)"
    failures=$((failures + 1))
    continue
  fi
  kills=$((kills + 1))
  if "$mel" train --resume "$d" --no-progress >"$d.resume.log" 2>&1; then
    check_result "$d" "killed at $point"
  else
    check_refusal "$d.resume.log" "killed at $point"
  fi
done

# 2. Kills at random moments (uniform over the uninterrupted run's duration), each followed by a
# resume (or a fresh start when no checkpoint was saved yet), until the run finishes by itself;
# from the 6th start on it is left to finish.
for ((r = 1; r <= rounds; r++)); do
  d=$tmp/random_$r
  for ((attempt = 1; ; attempt++)); do
    if has_checkpoint "$d"; then
      cmd=(train --resume "$d" --no-progress)
    else
      cmd=(train "$cfg" --out "$d" "${args[@]}")
    fi
    "$mel" "${cmd[@]}" >"$d.log" 2>&1 &
    pid=$!
    if ((attempt <= 5)); then
      delay_ms=$((20 + (RANDOM * 32768 + RANDOM) % ref_ms))
      sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
      kill -9 "$pid" 2>/dev/null
    fi
    { wait "$pid"; } 2>/dev/null
    rc=$?
    if [[ $rc == 137 ]]; then
      kills=$((kills + 1))
      has_checkpoint "$d" || before_first=$((before_first + 1))
      continue
    fi
    if [[ $rc == 0 ]]; then
      check_result "$d" "round $r after $((attempt - 1)) kills"
    elif [[ ${cmd[1]} == --resume ]]; then
      check_refusal "$d.log" "round $r"
    else
      echo "FAIL (round $r): a fresh start failed:"
      cat "$d.log"
      failures=$((failures + 1))
    fi
    break
  done
done

# 3. Two runs into one folder: the second is refused naming the first's pid.
d=$tmp/shared
"$mel" train "$cfg" --out "$d" --no-progress --epochs 50 --train-limit 192 >"$d.first.log" 2>&1 &
first=$!
for ((i = 0; i < 100; i++)); do
  [[ -s $d/.lock ]] && break
  sleep 0.05
done
"$mel" train "$cfg" --out "$d" "${args[@]}" --overwrite >"$d.second.log" 2>&1
rc=$?
kill -9 "$first" 2>/dev/null
{ wait "$first"; } 2>/dev/null
if [[ $rc == 1 ]] && grep -q "in use by another mel process (pid $first" "$d.second.log"; then
  echo "a second run into a folder in use: refused naming pid $first"
else
  echo "FAIL: a second run into a folder in use was not refused (exit $rc):"
  cat "$d.second.log"
  failures=$((failures + 1))
fi

echo "kills: $kills ($before_first before the first checkpoint); finished runs identical to" \
  "the uninterrupted one: $identical; clear refusals: $refused; failures: $failures"
((failures == 0))
