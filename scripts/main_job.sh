#!/usr/bin/env bash
# The main job: installs what is missing, builds the `mel` command, trains the reference MEL
# ensemble (configs/fmnist_mel2.json) on Fashion-MNIST and prints the failure table. On a machine
# with an NVIDIA GPU (and the CUDA toolkit, so the build has the CUDA backend) it trains the full
# recipe on the GPU; otherwise on the CPU, shortened (MEL_MAIN_EPOCHS, default 3) with fewer than
# 8 cores so that it ends in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cores=$(nproc)
# The CUDA backend is built only where a GPU can use it (it adds minutes of nvcc time).
gpu=0
if command -v nvidia-smi > /dev/null && nvidia-smi -L > /dev/null 2>&1; then gpu=1; fi
cuda=OFF
[ $gpu -eq 1 ] && cuda=AUTO
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DMEL_BUILD_TESTS=OFF \
  -DMEL_BUILD_BENCHMARKS=OFF -DMEL_CUDA=$cuda > /dev/null
cmake --build build-main -j "$cores" --target mel

args=(--out runs/fmnist_mel2)
device=cpu
if [ $gpu -eq 1 ] && grep -q "^MEL_WITH_CUDA:INTERNAL=ON" build-main/CMakeCache.txt; then
  device=cuda
fi
args+=(--device "$device")
if [ "$device" = cpu ] && [ "$cores" -lt 8 ]; then
  epochs=${MEL_MAIN_EPOCHS:-3}
  echo "main job: $cores cores, so a shortened run of $epochs epochs (the full recipe is 10)"
  args+=(--epochs "$epochs")
fi
./build-main/mel train configs/fmnist_mel2.json "${args[@]}"
