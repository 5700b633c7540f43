#!/usr/bin/env bash
# Configures, builds and runs the whole test suite: a Release build, then (unless
# MEL_TEST_SANITIZE=0) an AddressSanitizer + UndefinedBehaviorSanitizer build of the same suite.
# Extra CMake arguments can be passed in MEL_CMAKE_ARGS (e.g. "-DMEL_CUDA=OFF").
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
extra=${MEL_CMAKE_ARGS:-}

run_suite() {  # $1 build dir, rest: cmake args
  local dir=$1
  shift
  echo "test: configuring $dir ($*)"
  # shellcheck disable=SC2086
  mkdir -p "$dir"
  cmake -S . -B "$dir" "$@" $extra > "$dir/configure.log" 2>&1 || { cat "$dir/configure.log"; exit 1; }
  echo "test: building $dir with $jobs jobs"
  cmake --build "$dir" -j "$jobs"
  echo "test: running the suite in $dir"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" --timeout 900
}

start=$(date +%s)
run_suite build -DCMAKE_BUILD_TYPE=Release
# With the CUDA toolkit installed the Release build compiles the CUDA backend (for the local GPU's
# architecture, else sm_90); its `gpu` tests skip with the reason when no GPU is visible.
if grep -q "^MEL_WITH_CUDA:INTERNAL=ON" build/CMakeCache.txt; then
  echo "test: CUDA backend compiled for $(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:STRING=//p' build/CMakeCache.txt)"
else
  echo "test: no CUDA toolkit found: the CUDA backend was not compiled"
fi
if [ "${MEL_TEST_SANITIZE:-1}" != "0" ]; then
  # Sanitizers check the CPU code; the CUDA backend is left out of this build.
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEL_SANITIZE=ON -DMEL_CUDA=OFF \
    -DMEL_BUILD_BENCHMARKS=OFF
fi
echo "test: all suites passed in $(( $(date +%s) - start )) s"
