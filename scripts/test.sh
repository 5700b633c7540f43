#!/usr/bin/env bash
# Configures, builds and runs the whole test suite: a Release build, the out-of-tree example built
# against the installed package, then (when the CUDA toolkit is installed, unless
# MEL_TEST_CUDASIM=0) the GPU parity tests on the kernel simulator (a MEL_CUDA=SIM build,
# tests/cudasim/), then (unless MEL_TEST_SANITIZE=0) an AddressSanitizer +
# UndefinedBehaviorSanitizer build of the same suite, then (unless MEL_TEST_FUZZ=0) 20 s of libFuzzer
# per reader of outside bytes (scripts/fuzz.sh; skipped with the reason without clang++/libFuzzer).
# Extra CMake arguments can be passed in MEL_CMAKE_ARGS (e.g. "-DMEL_CUDA=OFF").
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
extra=${MEL_CMAKE_ARGS:-}
# Unity builds (cmake/BuildSpeed.cmake): each target compiled as a few translation units, which
# share the parsing and optimising of the common headers: about half the build time.
speed=(-DMEL_UNITY_BUILD=ON)

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
phase() {  # prints how long the run has taken so far
  echo "test: $1 ($(( $(date +%s) - start )) s so far)"
}
run_suite build -DCMAKE_BUILD_TYPE=Release "${speed[@]}"
# With the CUDA toolkit installed the Release build compiles the CUDA backend (for the local GPU's
# architecture, else sm_90); its `gpu` tests skip with the reason when no GPU is visible.
if grep -q "^MEL_WITH_CUDA:INTERNAL=ON" build/CMakeCache.txt; then
  echo "test: CUDA backend compiled for $(sed -n 's/^CMAKE_CUDA_ARCHITECTURES:STRING=//p' build/CMakeCache.txt)"
else
  echo "test: no CUDA toolkit found: the CUDA backend was not compiled"
fi
# Extension from outside: install mel into a temporary prefix, then build and run
# examples/custom_layer against it (find_package(mel), a layer with its own CPU and CUDA kernels,
# its gradient check, training through the engine).
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
echo "test: installing into $prefix and building examples/custom_layer against it"
cmake --install build --prefix "$prefix/install" > "$prefix/install.log" 2>&1 || { cat "$prefix/install.log"; exit 1; }
cmake -S examples/custom_layer -B "$prefix/example" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix/install" > "$prefix/example.log" 2>&1 || { cat "$prefix/example.log"; exit 1; }
cmake --build "$prefix/example" -j "$jobs"
"$prefix/example/custom_layer" "$prefix/run" | tail -n 4
phase "Release suite and example passed"

# The hand-written CUDA kernels on the kernel simulator (docs/ARCHITECTURE.md, "Kernel
# simulator"): kernels/cuda compiled as host C++, the GPU parity tests of tests/cuda run under three
# schedules with barriers, shuffles, bounds and shared memory checked, and every launch of
# kernels/cuda must have run. Needs the CUDA toolkit's headers (not a GPU).
if [ "${MEL_TEST_CUDASIM:-1}" != "0" ]; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "test: the kernel simulator runs on x86-64 only: its suite was skipped on $(uname -m)"
  elif grep -q "^MEL_WITH_CUDA:INTERNAL=ON" build/CMakeCache.txt; then
    run_suite build-cudasim -DCMAKE_BUILD_TYPE=Release -DMEL_CUDA=SIM -DMEL_MPI=OFF -DMEL_ONNX=OFF \
      -DMEL_BUILD_BENCHMARKS=OFF "${speed[@]}"
    ctest --test-dir build-cudasim -R 'cudasim_coverage$' -FS cudasim_coverage -V \
      | sed -n 's/^[0-9]*: \(cudasim.*\)/test: \1/p'
    phase "kernel simulator suite passed"
  else
    echo "test: no CUDA toolkit found: the kernel simulator suite was skipped"
  fi
fi

if [ "${MEL_TEST_SANITIZE:-1}" != "0" ]; then
  # Sanitizers check the CPU code; the CUDA backend and MPI (whose runtime LeakSanitizer would
  # report) are left out of this build. An allocation beyond memory returns null, as without
  # ASan, so that mel reports it (the bad-input catalogue asks for one). -O1 with line tables
  # (-g1) instead of RelWithDebInfo's -O2 -g: about half the compile time, the same checks, stacks
  # with files and lines.
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_suite build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEL_SANITIZE=ON -DMEL_CUDA=OFF -DMEL_MPI=OFF \
    -DMEL_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" "${speed[@]}"
  phase "sanitizer suite passed"
fi
# Fuzzing (scripts/fuzz.sh): a clang++ libFuzzer build of the readers of outside bytes, each
# target fuzzed for 20 s; a new crash fails the suite (and is kept under fuzz/crashes/). Skips with
# the reason when clang++ or libFuzzer is missing; MEL_TEST_FUZZ=0 skips it.
if [ "${MEL_TEST_FUZZ:-1}" != "0" ]; then
  MEL_FUZZ_BUILD=build-fuzz bash scripts/fuzz.sh 20
fi
echo "test: all suites passed in $(( $(date +%s) - start )) s"
