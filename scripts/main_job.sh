#!/usr/bin/env bash
# The main job: installs what is missing, builds the `mel` command, trains the reference MEL
# ensemble (configs/fmnist_mel2.json) on Fashion-MNIST and prints the failure table. With fewer
# than 8 cores the run is shortened (MEL_MAIN_EPOCHS, default 3) so that it ends in minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cores=$(nproc)
cmake -S . -B build-main -DCMAKE_BUILD_TYPE=Release -DMEL_BUILD_TESTS=OFF \
  -DMEL_BUILD_BENCHMARKS=OFF > /dev/null
cmake --build build-main -j "$cores" --target mel

args=(--out runs/fmnist_mel2)
if [ "$cores" -lt 8 ]; then
  epochs=${MEL_MAIN_EPOCHS:-3}
  echo "main job: $cores cores, so a shortened run of $epochs epochs (the full recipe is 10)"
  args+=(--epochs "$epochs")
fi
# The trainer runs on the CPU: the CUDA backend is not part of this build yet.
./build-main/mel train configs/fmnist_mel2.json "${args[@]}"
