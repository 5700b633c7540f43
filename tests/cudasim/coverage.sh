#!/usr/bin/env bash
# Checks that every kernel launch written in kernels/cuda ran on the kernel simulator during the
# simulated suite (ctest test `cudasim_coverage`, after all the others). Each simulated test
# process writes the launch sites it ran ("/abs/kernels/cuda/file.cu:line") into
# MEL_CUDASIM_COVERAGE_DIR; a site is the line where the launch statement starts (the kernel's
# name). Launches that only follow a cuBLASLt or cuDNN call cannot run on the simulator; they are
# listed with the reason in tests/cudasim/uncovered.txt ("file kernel_name: reason").
# A partial run (fewer reports than the test program has tests, e.g. `ctest -R one_test`) cannot
# tell: the check then skips (exit 77).
# Usage: coverage.sh COVERAGE_DIR SOURCE_DIR TEST_PROGRAM
set -euo pipefail
dir=$1
src=$2
program=$3
allow="$src/tests/cudasim/uncovered.txt"
tests=$("$program" --gtest_list_tests | grep -c '^  ')
reports=$(find "$dir" -name '*.txt' 2>/dev/null | wc -l)
if [ "$reports" -lt "$tests" ]; then
  echo "cudasim coverage: $reports of $tests test processes reported: a partial run, not checked"
  exit 77
fi
ran=$(cat "$dir"/*.txt 2>/dev/null | grep -v '^#' | sed 's|.*/\(kernels/cuda/\)|\1|' | sort -u)
# what the simulator did in the whole suite (each process's counters, summed)
cat "$dir"/*.txt | awk '/^#counters/ { for (i = 2; i <= 8; ++i) s[i] += $i }
  END { printf "cudasim: %d launches (each under every schedule), %d block runs, %d thread runs, " \
        "%d barriers and %d warp operations resolved, %.0f MB compared between schedules, " \
        "%d pointer checks\n", s[2], s[3], s[4], s[5], s[6], s[7] / 1e6, s[8] }' 
total=0 covered=0 excused=0 missing=()
while IFS=$'\t' read -r file line name; do
  total=$((total + 1))
  if grep -qx "$file:$line" <<< "$ran"; then
    covered=$((covered + 1))
  elif grep -q "^$file $name:" "$allow"; then
    excused=$((excused + 1))
  else
    missing+=("$file:$line ($name)")
  fi
done < <(cd "$src" && for f in kernels/cuda/*.cu kernels/cuda/*.cuh; do
  awk -v f="$f" '
    /<<</ {
      before = $0; sub(/<<<.*/, "", before)
      if (before ~ /^[ \t]*$/) { l = NR - 1; text = prev } else { l = NR; text = before }
      sub(/^[ \t]*/, "", text); name = text; sub(/[<( \t].*/, "", name)
      printf "%s\t%d\t%s\n", f, l, name
    }
    { prev = $0 }' "$f"
done)
echo "cudasim coverage: $covered of $total kernel launches in kernels/cuda ran on the simulator," \
     "$excused GPU-only (tests/cudasim/uncovered.txt), ${#missing[@]} never ran"
if [ ${#missing[@]} -gt 0 ]; then
  printf '  never ran: %s\n' "${missing[@]}"
  echo "Add a parity test in tests/cuda that reaches each, or list it in tests/cudasim/uncovered.txt" \
       "with the reason it cannot run on the simulator."
  exit 1
fi
