#!/usr/bin/env bash
# Behaviour check for refactors: trains the same small runs with two `mel` binaries (say, one built
# from the previous commit and one from the working tree) and compares what they wrote. Weights,
# optimizer state and exported files must be identical byte for byte; eval and info output too;
# metrics.jsonl and report.json must agree on every field both have (timings are ignored; fields
# only one of them has are listed). Needs Fashion-MNIST and python3.
#
# Usage: scripts/compare_runs.sh OLD_MEL NEW_MEL [WORK_DIR]
set -euo pipefail
old=$(realpath "$1")
new=$(realpath "$2")
work=${3:-$(mktemp -d)}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# Every run writes into $work/<binary>/<name>.
run_all() {  # $1 mel binary, $2 output folder
  local mel=$1 out=$2
  rm -rf "$out" && mkdir -p "$out"
  local common=(--no-progress --test-limit 300)
  "$mel" train configs/fmnist_original.json --epochs 2 --train-limit 1024 --out "$out/orig" "${common[@]}" > /dev/null
  "$mel" train configs/fmnist_mel2.json --epochs 2 --train-limit 1024 --out "$out/mel2" "${common[@]}" > /dev/null
  "$mel" train configs/fmnist_mel2_independent.json --epochs 1 --train-limit 512 --out "$out/independent" "${common[@]}" > /dev/null
  "$mel" train configs/fmnist_mel2_combination_only.json --epochs 1 --train-limit 512 --out "$out/combination" "${common[@]}" > /dev/null
  "$mel" train configs/fmnist_mel3.json --epochs 1 --train-limit 512 --seed 5 --batch 100 --out "$out/mel3" "${common[@]}" > /dev/null
  "$mel" train configs/fmnist_mel2.json --epochs 2 --train-limit 1024 --out "$out/resumed" --stop-after 1 "${common[@]}" > /dev/null
  "$mel" train --resume "$out/resumed" --no-progress > /dev/null
  "$mel" eval "$out/mel2" > "$out/eval.txt"
  "$mel" info configs/fmnist_mel3.json > "$out/info.txt"
  "$mel" export "$out/mel2" --out "$out/export" > /dev/null
}

echo "compare_runs: training with $old"
run_all "$old" "$work/old"
echo "compare_runs: training with $new"
run_all "$new" "$work/new"

python3 - "$work/old" "$work/new" <<'EOF'
import filecmp, json, os, sys
old, new = sys.argv[1], sys.argv[2]
timing = {"epoch_seconds", "samples_per_second", "train_seconds", "threads"}
failures, notes = [], []

def records(path):
    text = open(path).read()
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]

def compare(a, b, where):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in timing:
                continue
            if k not in a or k not in b:
                notes.append(f"{where.split('[')[0]}.{k}: only in the {'new' if k in b else 'old'} run")
            else:
                compare(a[k], b[k], f"{where}.{k}")
    elif a != b:
        failures.append(f"{where}: {json.dumps(a)[:80]} vs {json.dumps(b)[:80]}")

for run in sorted(os.listdir(old)):
    o, n = os.path.join(old, run), os.path.join(new, run)
    if os.path.isfile(o):
        if not filecmp.cmp(o, n, shallow=False):
            failures.append(f"{run} differs")
        continue
    for f in sorted(os.listdir(o)):
        if f.endswith(".safetensors"):
            if not filecmp.cmp(os.path.join(o, f), os.path.join(n, f), shallow=False):
                failures.append(f"{run}/{f} differs")
        elif f in ("metrics.jsonl", "report.json"):
            ra, rb = records(os.path.join(o, f)), records(os.path.join(n, f))
            if len(ra) != len(rb):
                failures.append(f"{run}/{f}: {len(ra)} vs {len(rb)} records")
            for i, (a, b) in enumerate(zip(ra, rb)):
                compare(a, b, f"{run}/{f}[{i}]")
for line in sorted(set(notes)):
    print("note:", line)
for line in failures:
    print("DIFFERS:", line)
print("compare_runs:", "identical" if not failures else f"{len(failures)} differences")
sys.exit(1 if failures else 0)
EOF
