#!/usr/bin/env bash
# Installs the Debian packages mel needs to build, test and train. Idempotent: packages already
# present are left alone and apt is not touched when nothing is missing. Run as root.
# Usage: scripts/setup.sh [--tests]   (--tests: also what only the tests use, e.g. an ONNX runtime)
set -euo pipefail

PACKAGES=(
  g++ make cmake pkg-config        # toolchain (CMake >= 3.25)
  libfmt-dev                       # formatting
  nlohmann-json3-dev               # JSON configs and checkpoint headers
  libcli11-dev                     # the mel command line
  libopenblas-openmp-dev           # CPU GEMM, OpenMP build (optional: a blocked GEMM is built in)
  zlib1g-dev                       # gzip-compressed IDX files
  libsndfile1-dev                  # audio files (WAV, FLAC, ...) of the audio datasets
  libfftw3-dev                     # FFTs of the log-mel spectrograms
  libopenmpi-dev openmpi-bin       # the MPI backend of dist/ (processes, nodes)
  libzmq3-dev                      # messaging between the servers of `mel serve` / `mel simulate`
  libonnx-dev libprotobuf-dev      # `mel export --format onnx` (the ONNX protobuf classes)
  libgtest-dev libgmock-dev        # tests
  libbenchmark-dev                 # benchmarks
  dataset-fashion-mnist            # the data of the main job (/usr/share/datasets/fashion-mnist)
)

# Only for the tests: the ONNX checker, OpenCV's dnn module as an ONNX runtime that runs the
# exported models (ONNX Runtime itself is not packaged in Debian), and clang with libFuzzer for
# the fuzz targets (scripts/fuzz.sh), espeak-ng and sox for the spoken-word tests (which run
# scripts/make_spoken_words.sh on a few voices), and fortunes, the English text of the language
# tests (scripts/make_text_corpus.sh).
TEST_PACKAGES=(python3-onnx python3-numpy python3-opencv clang libclang-rt-dev espeak-ng sox
               libsox-fmt-base fortunes)
for arg in "$@"; do
  case "$arg" in
    --tests) PACKAGES+=("${TEST_PACKAGES[@]}") ;;
    *) echo "setup: unknown option '$arg' (expected --tests)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} required Debian packages are installed"
  exit 0
fi

echo "setup: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: error: installing packages needs root; rerun as root (or with sudo)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
