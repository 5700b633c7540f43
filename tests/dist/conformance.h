// The communicator conformance suite: the same test bodies for every backend (in-process threads,
// MPI processes, NCCL GPUs). Each body runs on every rank of a communicator of at least 2 ranks
// and checks its own rank's view with gtest assertions.
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/mel.h"
#include "dist/communicator.h"
#include "tests/gradcheck.h"

namespace mel::dist::conformance {

// A tensor whose values depend on (seed, rank): every rank can compute what any other sent.
inline Tensor values_of(int rank, const Shape& shape, DType dtype, int seed = 0) {
  std::vector<double> v(static_cast<size_t>(numel_of(shape)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = (rank + 1) * 100 + seed * 7 + static_cast<double>(i % 97);
  return tensor(v, shape, dtype);
}

inline Tensor on(const Communicator& comm, const Tensor& t) {
  return t.to(comm.device());
}

inline void sizes_and_ranks(Communicator& comm, int expected_size) {
  EXPECT_EQ(comm.size(), expected_size);
  EXPECT_GE(comm.rank(), 0);
  EXPECT_LT(comm.rank(), comm.size());
}

// A ring of sends in every dtype, with a non-contiguous source, an empty tensor and three messages
// in a row (received in order).
inline void send_recv_ring(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  for (DType dt :
       {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8}) {
    Tensor out = on(comm, values_of(r, {3, 4}, dt));
    Tensor in = on(comm, zeros({3, 4}, dt));
    // even ranks send first, odd ranks receive first: no two ranks wait on each other
    if (r % 2 == 0) {
      comm.send(out, next);
      comm.recv(in, prev);
    } else {
      comm.recv(in, prev);
      comm.send(out, next);
    }
    EXPECT_EQ(in.to_vector(), values_of(prev, {3, 4}, dt).to_vector()) << dtype_name(dt);
  }
  Tensor strided = on(comm, values_of(r, {4, 3}, DType::f32)).t();  // [3, 4], not contiguous
  Tensor got = on(comm, zeros({3, 4}));
  Tensor empty_in = on(comm, zeros({0, 5}));
  std::vector<Tensor> seq(3);
  for (int k = 0; k < 3; ++k) seq[k] = on(comm, zeros({2}));
  auto sends = [&] {
    comm.send(strided, next);
    comm.send(on(comm, zeros({0, 5})), next);
    for (int k = 0; k < 3; ++k) comm.send(on(comm, full({2}, 10.0 * r + k)), next);
  };
  auto recvs = [&] {
    comm.recv(got, prev);
    comm.recv(empty_in, prev);
    for (int k = 0; k < 3; ++k) comm.recv(seq[k], prev);
  };
  if (r % 2 == 0) {
    sends();
    recvs();
  } else {
    recvs();
    sends();
  }
  EXPECT_EQ(got.to_vector(), values_of(prev, {4, 3}, DType::f32).t().contiguous().to_vector());
  for (int k = 0; k < 3; ++k) EXPECT_EQ(seq[k].to_vector()[0], 10.0 * prev + k);
}

// The sum in rank order, bitwise the same on every rank: values chosen so that the order matters.
inline void all_reduce_sum(Communicator& comm) {
  const int n = comm.size();
  Tensor t = on(comm, values_of(comm.rank(), {5, 7}, DType::f32));
  Tensor tiny = on(comm, full({3}, comm.rank() == 0 ? 1e8 : 1.0 / 3.0, DType::f32));
  comm.all_reduce_sum(t);
  comm.all_reduce_sum(tiny);
  Tensor want = values_of(0, {5, 7}, DType::f32);
  Tensor want_tiny = full({3}, 1e8, DType::f32);
  for (int r = 1; r < n; ++r) {
    want = add(want, values_of(r, {5, 7}, DType::f32));
    want_tiny = add(want_tiny, full({3}, 1.0 / 3.0, DType::f32));
  }
  EXPECT_EQ(t.to_vector(), want.to_vector());
  if (comm.backend() != "nccl") {
    EXPECT_EQ(tiny.to_vector(), want_tiny.to_vector()) << "rank order";
  }
  Tensor ints = on(comm, full({4}, comm.rank() + 1, DType::i64));
  comm.all_reduce_sum(ints);
  EXPECT_EQ(ints.to_vector()[0], n * (n + 1) / 2);
  // every summed dtype, a tensor large enough for the parallel loop, and an empty one
  for (DType dt : {DType::f64, DType::bf16, DType::f16}) {
    Tensor x = on(comm, values_of(comm.rank(), {3, 4}, dt));
    comm.all_reduce_sum(x);
    Tensor want_x = values_of(0, {3, 4}, dt);
    for (int r = 1; r < n; ++r) want_x = add(want_x, values_of(r, {3, 4}, dt));
    EXPECT_EQ(x.to(Device::cpu()).to_vector(), want_x.to_vector()) << dtype_name(dt);
  }
  Tensor big = on(comm, values_of(comm.rank(), {3, 50000}, DType::f32));
  comm.all_reduce_sum(big);
  Tensor want_big = values_of(0, {3, 50000}, DType::f32);
  for (int r = 1; r < n; ++r) want_big = add(want_big, values_of(r, {3, 50000}, DType::f32));
  EXPECT_EQ(big.to(Device::cpu()).to_vector(), want_big.to_vector());
  Tensor none = on(comm, empty({0, 3}, DType::f32));
  comm.all_reduce_sum(none);
  EXPECT_EQ(none.numel(), 0);
}

inline void broadcast_from_every_root(Communicator& comm) {
  for (int root = 0; root < comm.size(); ++root) {
    Tensor t = on(comm, values_of(comm.rank(), {6}, DType::f64, root));
    comm.broadcast(t, root);
    EXPECT_EQ(t.to_vector(), values_of(root, {6}, DType::f64, root).to_vector()) << root;
  }
}

inline void all_gather_by_rank(Communicator& comm) {
  Tensor g = comm.all_gather(on(comm, values_of(comm.rank(), {2, 3}, DType::f32)));
  ASSERT_EQ(g.shape(), (Shape{comm.size(), 2, 3}));
  for (int r = 0; r < comm.size(); ++r) {
    EXPECT_EQ(g.select(0, r).contiguous().to_vector(),
              values_of(r, {2, 3}, DType::f32).to_vector());
  }
  comm.barrier();
}

// Even and odd ranks in two groups, ordered by descending key: sizes, ranks and a collective
// inside.
inline void split_into_groups(Communicator& comm) {
  const int color = comm.rank() % 2;
  auto sub = comm.split(color, -comm.rank());
  int members = 0, my_index = 0;
  for (int r = comm.size() - 1; r >= 0; --r) {
    if (r % 2 != color) continue;
    if (r == comm.rank()) my_index = members;
    ++members;
  }
  EXPECT_EQ(sub->size(), members);
  EXPECT_EQ(sub->rank(), my_index);
  Tensor t = on(*sub, full({1}, comm.rank(), DType::i64));
  sub->all_reduce_sum(t);
  int64_t want = 0;
  for (int r = color; r < comm.size(); r += 2) want += r;
  EXPECT_EQ(t.to_vector()[0], want);
}

// A receive into a tensor of another shape is an error naming the sender and both tensors; the
// message is consumed, so the ranks stay in step.
inline void mismatch_is_an_error(Communicator& comm) {
  if (comm.backend() == "nccl") GTEST_SKIP() << "NCCL does not check messages";
  const int r = comm.rank();
  if (r == 0) {
    comm.send(on(comm, zeros({4})), 1);
  } else if (r == 1) {
    Tensor wrong = on(comm, zeros({5}));
    EXPECT_MEL_ERROR(comm.recv(wrong, 0), "rank 0 sent");
  }
  Tensor uneven = on(comm, zeros({r + 1}));
  EXPECT_MEL_ERROR(comm.all_gather(uneven), "all_gather", "same shape");
  comm.barrier();
}

struct Body {
  const char* name;
  std::function<void(Communicator&)> run;
};

inline std::vector<Body> bodies() {
  return {{"send_recv_ring", send_recv_ring},
          {"all_reduce_sum", all_reduce_sum},
          {"broadcast_from_every_root", broadcast_from_every_root},
          {"all_gather_by_rank", all_gather_by_rank},
          {"split_into_groups", split_into_groups},
          {"mismatch_is_an_error", mismatch_is_an_error}};
}

}  // namespace mel::dist::conformance
