#include "kernels/cpu/elementwise.h"

namespace mel::kernels::cpu {
namespace {

template <class T, class F>
void map1(const Iter<2>& it, T* y, const T* x, F f) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* yp = y + off[0];
    const T* xp = x + off[1];
    if (st[0] == 1 && st[1] == 1) {
      for (int64_t i = 0; i < n; ++i) yp[i] = f(xp[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) yp[i * st[0]] = f(xp[i * st[1]]);
    }
  });
}

template <class T, class F>
void map2(const Iter<3>& it, T* out, const T* a, const T* b, F f) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* o = out + off[0];
    const T* ap = a + off[1];
    const T* bp = b + off[2];
    if (st[0] == 1 && st[1] == 1 && st[2] == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(ap[i], bp[i]);
    } else if (st[0] == 1 && st[1] == 1 && st[2] == 0) {
      const T bv = *bp;
      for (int64_t i = 0; i < n; ++i) o[i] = f(ap[i], bv);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(ap[i * st[1]], bp[i * st[2]]);
    }
  });
}

// gx = gy * d(in), `in` being what the op's backward reads.
template <UnaryOp Op, class T>
void unary_grad(const UnaryParams<T>& p, int64_t n, const T* x, const T* y, const T* gy, T* gx) {
  using U = Unary<Op>;
  parallel_for(n, 16384, [&](int64_t b, int64_t e) {
    if constexpr (U::reads == GradReads::input) {
      for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * U::derivative(x[i], T(0), p);
    } else if constexpr (U::reads == GradReads::output) {
      for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * U::derivative(T(0), y[i], p);
    } else {
      for (int64_t i = b; i < e; ++i) gx[i] = gy[i] * U::derivative(T(0), T(0), p);
    }
  });
}

template <BinaryOp Op, class T>
void binary_grad(int which, const Iter<5>& it, T* grad, const T* g, const T* a, const T* b,
                 const T* y) {
  using B = Binary<Op>;
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* o = grad + off[0];
    const T* gp = g + off[1];
    const T* ap = a + off[2];
    const T* bp = b + off[3];
    const T* yp = y + off[4];
    if (which == 0) {
      for (int64_t i = 0; i < n; ++i) {
        o[i * st[0]] = B::grad_a(gp[i * st[1]], ap[i * st[2]], bp[i * st[3]], yp[i * st[4]]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        o[i * st[0]] = B::grad_b(gp[i * st[1]], ap[i * st[2]], bp[i * st[3]], yp[i * st[4]]);
      }
    }
  });
}

}  // namespace

// The switches below are generated from the tables: every op has its case, and there is no
// default branch that could compute another op.

template <class T>
void unary(UnaryOp op, UnaryArgs args, const Iter<2>& it, T* y, const T* x) {
  const UnaryParams<T> p = args.params<T>();
  switch (op) {
#define MEL_X(NAME, ...) \
  case UnaryOp::NAME:    \
    return map1(it, y, x, [p](T v) { return Unary<UnaryOp::NAME>::forward(v, p); });
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void unary_backward(UnaryOp op, UnaryArgs args, int64_t n, const T* x, const T* y, const T* gy,
                    T* gx) {
  const UnaryParams<T> p = args.params<T>();
  switch (op) {
#define MEL_X(NAME, ...) \
  case UnaryOp::NAME:    \
    return unary_grad<UnaryOp::NAME>(p, n, x, y, gy, gx);
    MEL_UNARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void binary(BinaryOp op, const Iter<3>& it, T* out, const T* a, const T* b) {
  switch (op) {
#define MEL_X(NAME, ...) \
  case BinaryOp::NAME:   \
    return map2(it, out, a, b, [](T u, T v) { return Binary<BinaryOp::NAME>::forward(u, v); });
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void binary_backward(BinaryOp op, int which, const Iter<5>& it, T* grad, const T* g, const T* a,
                     const T* b, const T* y) {
  switch (op) {
#define MEL_X(NAME, ...) \
  case BinaryOp::NAME:   \
    return binary_grad<BinaryOp::NAME>(which, it, grad, g, a, b, y);
    MEL_BINARY_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void compare(CompareOp op, const Iter<3>& it, uint8_t* out, const T* a, const T* b) {
  auto run = [&](auto f) {
    parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
      uint8_t* o = out + off[0];
      const T* ap = a + off[1];
      const T* bp = b + off[2];
      for (int64_t i = 0; i < n; ++i) o[i * st[0]] = f(ap[i * st[1]], bp[i * st[2]]);
    });
  };
  switch (op) {
#define MEL_X(NAME, ...) \
  case CompareOp::NAME:  \
    return run([](T u, T v) { return Compare<CompareOp::NAME>::apply(u, v); });
    MEL_COMPARE_OPS(MEL_X)
#undef MEL_X
  }
}

template <class T>
void where(const Iter<4>& it, T* out, const uint8_t* cond, const T* a, const T* b) {
  parallel_runs(it, [&](const int64_t* off, int64_t n, const int64_t* st) {
    T* o = out + off[0];
    const uint8_t* c = cond + off[1];
    const T* ap = a + off[2];
    const T* bp = b + off[3];
    for (int64_t i = 0; i < n; ++i) o[i * st[0]] = c[i * st[1]] ? ap[i * st[2]] : bp[i * st[3]];
  });
}

#define MEL_INSTANTIATE_FLOAT(T)                                                                  \
  template void unary<T>(UnaryOp, UnaryArgs, const Iter<2>&, T*, const T*);                       \
  template void unary_backward<T>(UnaryOp, UnaryArgs, int64_t, const T*, const T*, const T*, T*); \
  template void binary_backward<T>(BinaryOp, int, const Iter<5>&, T*, const T*, const T*,         \
                                   const T*, const T*);
MEL_INSTANTIATE_FLOAT(float)
MEL_INSTANTIATE_FLOAT(double)

#define MEL_INSTANTIATE_NUMERIC(T)                                                   \
  template void binary<T>(BinaryOp, const Iter<3>&, T*, const T*, const T*);         \
  template void compare<T>(CompareOp, const Iter<3>&, uint8_t*, const T*, const T*); \
  template void where<T>(const Iter<4>&, T*, const uint8_t*, const T*, const T*);
MEL_INSTANTIATE_NUMERIC(float)
MEL_INSTANTIATE_NUMERIC(double)
MEL_INSTANTIATE_NUMERIC(int32_t)
MEL_INSTANTIATE_NUMERIC(int64_t)
MEL_INSTANTIATE_NUMERIC(uint8_t)

}  // namespace mel::kernels::cpu
