#include "kernels/cpu/dropout.h"

#include "kernels/philox.h"
#include "kernels/strided.h"

namespace mel::kernels::cpu {

template <class T>
void dropout_forward(uint64_t seed, uint64_t offset, int64_t n, float keep, T scale, const T* x,
                     T* y, uint8_t* mask) {
  const int64_t blocks = static_cast<int64_t>(dropout_blocks(n));
  parallel_for(blocks, 4096, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const Philox4 r = philox_block(seed, offset, static_cast<uint64_t>(blk));
      const int64_t i0 = blk * 4;
      for (int lane = 0; lane < 4 && i0 + lane < n; ++lane) {
        const bool kept = philox_unit_f32(r.v[lane]) < keep;
        mask[i0 + lane] = kept ? 1 : 0;
        // a multiply rather than a select, so that dropped inf / NaN give NaN as in PyTorch
        y[i0 + lane] = x[i0 + lane] * (kept ? scale : T(0));
      }
    }
  });
}

template <class T>
void dropout_backward(int64_t n, T scale, const T* gy, const uint8_t* mask, T* gx) {
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * (mask[i] ? scale : T(0));
  });
}

#define MEL_DROPOUT_INSTANTIATE(T)                                                                 \
  template void dropout_forward<T>(uint64_t, uint64_t, int64_t, float, T, const T*, T*, uint8_t*); \
  template void dropout_backward<T>(int64_t, T, const T*, const uint8_t*, T*);
MEL_DROPOUT_INSTANTIATE(float)
MEL_DROPOUT_INSTANTIATE(double)
#undef MEL_DROPOUT_INSTANTIATE

}  // namespace mel::kernels::cpu
