#!/usr/bin/env bash
# Fuzzes every reader of outside bytes (fuzz/targets/, docs/ARCHITECTURE.md "Fuzzing") with
# libFuzzer: configures a clang++ build with MEL_FUZZ=ON in its own folder (MEL_FUZZ_BUILD, default
# build-fuzz), builds the targets, then runs each for SECONDS_PER_TARGET (default 30), as many
# side by side as MEL_FUZZ_JOBS (default: the number of cores), starting from fuzz/corpus/<target>/
# and every fixed reproducer in fuzz/crashes/<target>/. Prints per target the executions,
# libFuzzer's final coverage (cov: / ft:) and the crashes; a new crash, timeout, leak or
# out-of-memory input is copied to fuzz/crashes/<target>/ and the script exits with status 1.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Without clang++ and libFuzzer (Debian: clang, libclang-rt-dev) it prints why and exits 0.
# New corpus inputs stay in the build folder (MEL_FUZZ_BUILD/fuzz-run/<target>/corpus), so repeated
# runs go on from where the last one stopped; fuzz/corpus/ holds only the small committed seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-30}
shift || true
all_targets=(config safetensors idx cifar npy serving wav text)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi
build=${MEL_FUZZ_BUILD:-build-fuzz}
jobs=${MEL_FUZZ_JOBS:-$(nproc)}
cxx=${MEL_FUZZ_CXX:-clang++}

# ---- is libFuzzer there? -------------------------------------------------------------------------
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
if ! command -v "$cxx" > /dev/null 2>&1; then
  echo "fuzz: skipped: $cxx not found (install clang and libclang-rt-dev, or set MEL_FUZZ_CXX)"
  exit 0
fi
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" \
  > "$probe/log" 2>&1; then
  echo "fuzz: skipped: $cxx cannot link -fsanitize=fuzzer (install libclang-rt-dev): $(head -n 1 "$probe/log")"
  exit 0
fi

# ---- build ---------------------------------------------------------------------------------------
start=$(date +%s)
mkdir -p "$build"
echo "fuzz: configuring $build ($cxx, MEL_FUZZ=ON)"
# -O1 with line tables: fast enough to fuzz, quick to build, readable sanitizer stacks; a unity
# build (cmake/BuildSpeed.cmake) compiles the libraries in about half the time.
cmake -S . -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DMEL_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DMEL_UNITY_BUILD=ON \
  -DMEL_CUDA=OFF -DMEL_MPI=OFF \
  -DMEL_ONNX=OFF -DMEL_BUILD_TESTS=OFF -DMEL_BUILD_BENCHMARKS=OFF > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
echo "fuzz: building the targets with $jobs jobs"
cmake --build "$build" -j "$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}") > "$build/build.log" 2>&1 \
  || { tail -n 60 "$build/build.log"; exit 1; }
echo "fuzz: built in $(( $(date +%s) - start )) s"

# ---- run -----------------------------------------------------------------------------------------
max_len() {
  case $1 in
    cifar) echo 10000 ;;  # three CIFAR-100 records
    npy) echo 2048 ;;
    text) echo 4096 ;;    # a few fortunes (documents between lines "%")
    *) echo 4096 ;;       # configs (the reference ones are 1.5 to 3.3 KB), headers, messages
  esac
}
# one core for the kernels' OpenMP loops; leaks are reported (fixed caches stay reachable)
export OMP_NUM_THREADS=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# fuzz_one TARGET: fuzzes it for $secs s; its report goes to stdout, its number of crashes to
# $build/fuzz-run/TARGET/crashes and its summary line to $build/fuzz-run/TARGET/summary.
fuzz_one() {
  local t=$1
  local exe="$build/fuzz/fuzz_$t" run="$build/fuzz-run/$t"
  mkdir -p "$run/corpus" "$run/artifacts" "fuzz/crashes/$t"
  rm -f "$run/artifacts"/*
  # Replay the fixed reproducers too (not those still open elsewhere: fuzz/known_open.txt).
  for f in "fuzz/crashes/$t"/*; do
    [ -f "$f" ] || continue
    grep -q "^$t/$(basename "$f")\b" fuzz/known_open.txt && continue
    cp -f "$f" "$run/corpus/"
  done
  local dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=(-dict="fuzz/dicts/$t.dict")
  local rss=2048
  [ "$t" = config ] && rss=4096
  echo "fuzz: running fuzz_$t for $secs s (max_len $(max_len "$t"))"
  set +e
  "$exe" "$run/corpus" "fuzz/corpus/$t" -max_total_time="$secs" -max_len="$(max_len "$t")" \
    -timeout=10 -rss_limit_mb=$rss -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$run/artifacts/" < /dev/null > "$run/log" 2>&1
  local rc=$?
  set -e
  local execs cov crashes=0
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -n 1)
  [ -n "$execs" ] || execs=$( (grep -o '^#[0-9]*' "$run/log" || true) | tail -n 1 | tr -d '#')
  cov=$( (grep -o 'cov: [0-9]* ft: [0-9]*' "$run/log" || true) | tail -n 1)
  for a in "$run/artifacts"/*; do
    [ -f "$a" ] || continue
    crashes=$((crashes + 1))
    cp -f "$a" "fuzz/crashes/$t/"
    echo "fuzz: $t: NEW $(basename "$a") -> fuzz/crashes/$t/$(basename "$a")"
    grep -m 3 -E 'ERROR: |SUMMARY: |runtime error|terminate called|==[0-9]+== *ERROR' "$run/log" \
      | sed 's/^/fuzz:   /' || true
  done
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    echo "fuzz: $t: libFuzzer exited with status $rc and left no input; the end of its log:"
    tail -n 20 "$run/log"
    crashes=1
  fi
  echo "$crashes" > "$run/crashes"
  printf '%-12s executions %-9s %-22s crashes %s\n' "$t" "${execs:-?}" "${cov:-cov: ? ft: ?}" \
    "$crashes" > "$run/summary"
}
# The targets run side by side, MEL_FUZZ_JOBS (default: the number of cores) at a time, each on
# one core for its own SECONDS_PER_TARGET; their reports are printed in order once all are done.
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  mkdir -p "$build/fuzz-run/$t"
  rm -f "$build/fuzz-run/$t/crashes" "$build/fuzz-run/$t/summary"
  fuzz_one "$t" > "$build/fuzz-run/$t/report" 2>&1 &
done
wait
found=0
summary=()
for t in "${targets[@]}"; do
  run="$build/fuzz-run/$t"
  cat "$run/report"
  if [ ! -f "$run/summary" ]; then
    echo "fuzz: $t: the fuzzing script failed before the end (see $run/report)"
    found=1
    continue
  fi
  [ "$(cat "$run/crashes")" -gt 0 ] && found=1
  summary+=("$(cat "$run/summary")")
done

echo "fuzz: summary ($secs s per target, logs in $build/fuzz-run/<target>/log)"
printf 'fuzz:   %s\n' "${summary[@]}"
echo "fuzz: done in $(( $(date +%s) - start )) s"
if [ "$found" -ne 0 ]; then
  echo "fuzz: crashes found: reproduce one with $build/fuzz/fuzz_<target> FILE; each is now in" \
       "fuzz/crashes/<target>/ and replayed by ctest (label fuzz)"
  exit 1
fi
