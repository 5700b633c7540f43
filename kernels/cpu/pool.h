// CPU 2-D pooling over contiguous [planes, H, W] blocks (planes = N * C): max pooling with saved
// argmax, average pooling (PyTorch's divisor rules), adaptive average pooling, and their backward.
#pragma once
#include <cstdint>

namespace mel::kernels::cpu {

// Geometry of one pooling call; the caller has checked it (kernel, stride > 0, outputs >= 1).
struct Pool2dGeom {
  int64_t planes = 0;  // N * C
  int64_t h = 0, w = 0;
  int64_t oh = 0, ow = 0;
  int64_t kh = 1, kw = 1;
  int64_t sh = 1, sw = 1;
  int64_t ph = 0, pw = 0;
};

// y[p, i, j] = max over the window (padding counts as -inf, NaN wins as in PyTorch);
// idx[p, i, j] = h * W + w of the first maximum. T: float or double.
template <class T>
void max_pool2d(const Pool2dGeom& g, const T* x, T* y, int32_t* idx);

// gx = 0, then gx[p, idx[p, i, j]] += gy[p, i, j].
template <class T>
void max_pool2d_backward(const Pool2dGeom& g, const T* gy, const int32_t* idx, T* gx);

// Mean over each window. count_include_pad: divide by the window clipped to the padded input
// (PyTorch's rule), otherwise by the number of real input elements in it.
template <class T>
void avg_pool2d(const Pool2dGeom& g, bool count_include_pad, const T* x, T* y);
template <class T>
void avg_pool2d_backward(const Pool2dGeom& g, bool count_include_pad, const T* gy, T* gx);

// Output cell (i, j) averages rows [floor(i H / oh), ceil((i + 1) H / oh)) and the same for
// columns (only planes, h, w, oh and ow of g are read).
template <class T>
void adaptive_avg_pool2d(const Pool2dGeom& g, const T* x, T* y);
template <class T>
void adaptive_avg_pool2d_backward(const Pool2dGeom& g, const T* gy, T* gx);

}  // namespace mel::kernels::cpu
