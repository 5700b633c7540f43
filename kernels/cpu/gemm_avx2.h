// Private to the CPU GEMM: the AVX2 building blocks (gemm_avx2.cpp) that the blocked driver in
// gemm.cpp uses wherever the AVX-512 ones are missing or turned off.
#pragma once
#include "kernels/cpu/gemm_impl.h"

namespace mel::kernels::cpu::gemm_detail {

// The AVX2 packing routines and 6 x 16 (f32) / 6 x 8 (f64) micro-kernels; every x86-64-v3 CPU runs
// them.
const Arch<float>& avx2_arch_f32();
const Arch<double>& avx2_arch_f64();

}  // namespace mel::kernels::cpu::gemm_detail
