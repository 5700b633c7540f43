#!/usr/bin/env bash
# The GPU check for a machine with an NVIDIA GPU, in one command: configure and build (Release,
# CUDA on, the local GPU's architecture, all cores), run every test including the `gpu` label,
# build and run examples/custom_layer against the installed package (its own CUDA kernels against
# its CPU kernels), run compute-sanitizer memcheck over the `gpu` tests, run the GPU kernel
# benchmarks, train the reference CNN on Fashion-MNIST with the full recipe on the GPU, run placed
# MEL training on the GPU(s) (servers as threads on one GPU; as processes over NCCL with 3 GPUs;
# NCCL bandwidth with 2 or more), serve the trained ensemble as 3 processes on the GPU with an
# upstream killed and restarted (mel simulate), and print one summary.
#
# Usage: scripts/gpu_check.sh [DATA_DIR] [OUT_DIR]
#   DATA_DIR  Fashion-MNIST's IDX files (default /usr/share/datasets/fashion-mnist)
#   OUT_DIR   logs, benchmark JSON, the training run and summary.txt (default gpu-check)
# Environment: MEL_GPU_BUILD (build folder, default build-gpu); MEL_GPU_CHECK_EPOCHS (default: the
# recipe's 10); MEL_GPU_CHECK_PLACED_DEVICE (the placed runs' device, default cuda). Without a GPU the script still builds and tests (the gpu tests skip) and trains a
# one-epoch subset on the CPU, so that its own steps can be checked anywhere.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-/usr/share/datasets/fashion-mnist}
out=${2:-gpu-check}
build=${MEL_GPU_BUILD:-build-gpu}
jobs=$(nproc)
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
status=0
note() { echo "gpu_check: $*" | tee -a "$out/summary.txt"; }
stamp() { echo "$(( $(date +%s) - start )) s"; }
: > "$out/summary.txt"

have_gpu=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then
  have_gpu=1
  note "GPU: $(nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader | head -1)"
else
  note "no NVIDIA GPU found: gpu tests skip, no sanitizer, benchmarks or GPU training"
fi
if [ ! -f "$data/train-images-idx3-ubyte.gz" ] && [ ! -f "$data/train-images-idx3-ubyte" ]; then
  note "error: no Fashion-MNIST IDX files in $data (pass the folder as the first argument)"
  exit 2
fi

# ---- configure and build -------------------------------------------------------------------
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMEL_CUDA=ON > "$out/configure.log" 2>&1; then
  tail -30 "$out/configure.log"
  note "FAIL: configure (see $out/configure.log)"
  exit 1
fi
if ! cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1; then
  grep -E "error|Error" "$out/build.log" | head -30
  note "FAIL: build (see $out/build.log)"
  exit 1
fi
warnings=$(grep -c "warning:" "$out/build.log" || true)
note "build: ok in $(stamp), $warnings compiler warnings"

# ---- every test, gpu label included ----------------------------------------------------------
ctest --test-dir "$build" -j "$jobs" --timeout 900 --output-on-failure > "$out/ctest.log" 2>&1
ctest_rc=$?
summary_line=$(grep -E "tests passed|tests failed" "$out/ctest.log" | tail -1)
gpu_total=$(ctest --test-dir "$build" -N -L gpu 2>/dev/null | sed -n 's/^Total Tests: //p')
gpu_skipped=$(grep -c '\*\*\*Skipped' "$out/ctest.log" || true)
note "tests: ${summary_line:-no summary} (gpu-labelled: ${gpu_total:-?}, skipped: $gpu_skipped) at $(stamp)"
if [ $ctest_rc -ne 0 ]; then
  grep -E "\(Failed\)|\*\*\*" "$out/ctest.log" | head -20 | tee -a "$out/summary.txt"
  status=1
fi

# ---- the out-of-tree example against the installed package (its CUDA kernels on the GPU) ------
rm -rf "$out/install" "$out/example"
if cmake --install "$build" --prefix "$out/install" > "$out/example.log" 2>&1 &&
  cmake -S examples/custom_layer -B "$out/example" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$out/install" >> "$out/example.log" 2>&1 &&
  cmake --build "$out/example" -j "$jobs" >> "$out/example.log" 2>&1 &&
  "$out/example/custom_layer" "$out/example/run" >> "$out/example.log" 2>&1; then
  note "example custom_layer: $(grep 'GPU check' "$out/example.log" | head -1) at $(stamp)"
else
  note "FAIL: example custom_layer (see $out/example.log)"
  status=1
fi

# ---- compute-sanitizer memcheck over the gpu tests -------------------------------------------
if [ $have_gpu -eq 1 ]; then
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  if [ -x "$sanitizer" ]; then
    # The two training runs are left out: under memcheck they take many minutes, and the kernels
    # they launch are the ones the parity tests exercise.
    "$sanitizer" --tool memcheck --leak-check full --error-exitcode 3 \
      "$build/tests/test_cuda" --gtest_filter='-CudaModel.*Trains*:CudaModel.MelTrainCommand*' \
      > "$out/sanitizer.log" 2>&1
    san_rc=$?
    san_errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) error.*/\1/p' "$out/sanitizer.log" | tail -1)
    note "compute-sanitizer memcheck: ${san_errors:-?} errors (exit $san_rc) at $(stamp)"
    if [ $san_rc -ne 0 ] || [ "${san_errors:-1}" != "0" ]; then status=1; fi
  else
    note "FAIL: compute-sanitizer not found"
    status=1
  fi

  # ---- kernel benchmarks ---------------------------------------------------------------------
  for b in "$build"/benchmarks/bench_cuda_*; do
    [ -x "$b" ] || continue
    name=$(basename "$b")
    if "$b" --benchmark_format=console --benchmark_out="$out/$name.json" \
      --benchmark_out_format=json > "$out/$name.txt" 2>&1; then
      note "benchmark $name: ok ($(grep -c '"name"' "$out/$name.json") results) at $(stamp)"
    else
      note "FAIL: benchmark $name (see $out/$name.txt)"
      status=1
    fi
  done
fi

# ---- training: the reference CNN, full recipe ------------------------------------------------
rm -rf "$out/train"
if [ $have_gpu -eq 1 ]; then
  epochs=()
  [ -n "${MEL_GPU_CHECK_EPOCHS:-}" ] && epochs=(--epochs "$MEL_GPU_CHECK_EPOCHS")
  "$build/mel" train configs/fmnist_original.json --device cuda --data "$data" \
    --out "$out/train" --no-progress "${epochs[@]}" > "$out/train.log" 2>&1
else
  "$build/mel" train configs/fmnist_original.json --device cpu --data "$data" --epochs 1 \
    --train-limit 2048 --test-limit 1024 --out "$out/train" --no-progress > "$out/train.log" 2>&1
fi
train_rc=$?
tail -3 "$out/train.log"
report="$out/train/report.json"
if [ $train_rc -ne 0 ] || [ ! -f "$report" ]; then
  note "FAIL: training (see $out/train.log)"
  status=1
else
  acc=$(grep -A1 '"accuracy"' "$report" | sed -n 's/.*"1": *\([0-9.e+-]*\).*/\1/p')
  sps=$(sed -n 's/.*"samples_per_second": *\([0-9.e+-]*\).*/\1/p' "$report" | tail -1)
  peak=$(sed -n 's/.*"peak_gpu_memory_bytes": *\([0-9]*\).*/\1/p' "$report")
  secs=$(sed -n 's/.*"train_seconds": *\([0-9.e+-]*\).*/\1/p' "$report")
  note "training: test accuracy $acc, $sps samples/s, ${secs} s of training, peak GPU memory ${peak:-n/a} bytes at $(stamp)"
  if [ $have_gpu -eq 1 ] && [ -z "${MEL_GPU_CHECK_EPOCHS:-}" ] &&
    ! awk -v a="$acc" 'BEGIN { exit !(a >= 0.934) }'; then
    note "FAIL: accuracy $acc is below 0.934"
    status=1
  fi
fi

# ---- placed training on the GPU(s) -------------------------------------------------------------
# One GPU: every server as a thread on that device, against the one-process run. Three or more
# GPUs and mpirun: one process per server, the step's tensors over NCCL and staged through MPI.
# Several GPUs: NCCL bandwidth (bench_comm --nccl). What could not run is said in the summary.
if [ $have_gpu -eq 1 ]; then
  gpus=$(nvidia-smi -L | grep -c '^GPU')
  pdev=${MEL_GPU_CHECK_PLACED_DEVICE:-cuda}
  # placed NAME OPTIONS...: a placed_small run launched by ${launch[@]}; prints its head accuracy
  placed() {
    local name=$1
    shift
    rm -rf "$out/placed_$name"
    if "${launch[@]}" train tests/app/placed_small.json --device "$pdev" --data "$data" \
      --out "$out/placed_$name" --no-progress "$@" > "$out/placed_$name.log" 2>&1; then
      tr -d ' \n' < "$out/placed_$name/report.json" | sed 's/.*"accuracy":{[^}]*"1+2":\([0-9.]*\).*/\1/'
    else
      echo "FAIL"
    fi
  }
  launch=("$build/mel")
  one=$(placed single)
  threads=$(placed threads --placement threads)
  same=differ
  cmp -s "$out/placed_single/model.safetensors" "$out/placed_threads/model.safetensors" && same=identical
  note "placed on one GPU: one process head accuracy $one, 3 threads $threads (weights $same) at $(stamp)"
  [ "$one" = FAIL ] || [ "$threads" = FAIL ] && status=1
  # the reference MEL configuration, one epoch, one process against 3 threads on the GPU
  for p in single threads; do
    "$build/mel" train configs/fmnist_mel2.json --device "$pdev" --data "$data" --epochs 1 \
      --placement "$p" --out "$out/mel2_$p" --no-progress > "$out/mel2_$p.log" 2>&1 ||
      { note "FAIL: fmnist_mel2 --placement $p (see $out/mel2_$p.log)"; status=1; }
    note "fmnist_mel2, 1 epoch, --placement $p: $(sed -n 's/.*"samples_per_second": *\([0-9.]*\).*/\1/p' "$out/mel2_$p/report.json" | tail -1) samples/s"
  done
  # serving: the one-epoch fmnist_mel2 run as 3 server processes on the GPU (and on the CPU, for
  # comparison), upstream 2 killed at request 20 and restarted at 40
  for sd in "$pdev" cpu; do
    if "$build/mel" simulate "$out/mel2_single" --device "$sd" --data "$data" --batch 64 \
      --requests 60 --schedule kill:2@20,restart:2@40 --out "$out/simulate_$sd" \
      > "$out/simulate_$sd.log" 2>&1; then
      note "mel simulate, servers on $sd: $(tail -1 "$out/simulate_$sd/simulation.txt")"
    else
      note "FAIL: mel simulate with servers on $sd (see $out/simulate_$sd.log)"
      status=1
    fi
  done
  mpirun=$(command -v mpirun || true)
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  if [ -n "$mpirun" ] && [ "$gpus" -ge 3 ]; then
    for gc in nccl host; do
      launch=("$mpirun" -np 3 "$build/mel")
      r=$(placed "servers_$gc" --placement servers --gpu-comm "$gc")
      note "placed as 3 processes on 3 GPUs (--gpu-comm $gc): head accuracy $r at $(stamp)"
      [ "$r" = FAIL ] && status=1
    done
  else
    note "placed servers on GPUs not run: $gpus GPU(s), mpirun ${mpirun:-missing} (needs 3 GPUs)"
  fi
  if [ -n "$mpirun" ] && [ "$gpus" -ge 2 ]; then
    "$mpirun" -np "$gpus" "$build/benchmarks/bench_comm" --nccl > "$out/bench_comm_nccl.txt" 2>&1 ||
      { note "FAIL: bench_comm --nccl"; status=1; }
    note "bench_comm --nccl on $gpus GPUs: $(tail -1 "$out/bench_comm_nccl.txt")"
  else
    note "bench_comm --nccl not run: $gpus GPU(s) (needs 2)"
  fi
fi

if [ $status -eq 0 ]; then note "PASS in $(stamp)"; else note "FAILED in $(stamp)"; fi
exit $status
