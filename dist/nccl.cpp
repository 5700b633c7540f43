#include "dist/nccl.h"

#include "core/error.h"

#ifdef MEL_HAVE_NCCL
#include <nccl.h>

#include <cstring>

#include "core/cuda_context.h"
#include "core/factory.h"
#include "kernels/cuda/check.h"
#endif

namespace mel::dist {

bool nccl_built() {
#ifdef MEL_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

#ifndef MEL_HAVE_NCCL

std::unique_ptr<Communicator> nccl_communicator(Communicator&, Device) {
  fail("nccl: this build has no NCCL backend (it needs the CUDA backend and NCCL 2)");
}

#else

namespace {

void check_nccl(ncclResult_t rc, const char* call) {
  if (rc != ncclSuccess) fail("nccl: {} failed: {}", call, ncclGetErrorString(rc));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  fail("nccl: no NCCL type for dtype {}", dtype_name(t));
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, Device device) : comm_(comm), device_(device) {
    check_nccl(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check_nccl(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  Device device() const override { return device_; }

  void send(const Tensor& t, int dst) override {
    check_tensor(*this, t, "send");
    const Tensor c = t.detach().contiguous();
    check_nccl(ncclSend(c.data_ptr(), c.nbytes(), ncclUint8, dst, comm_, stream()), "ncclSend");
  }

  void recv(Tensor& t, int src) override {
    check_tensor(*this, t, "recv");
    MEL_CHECK(t.is_contiguous(), "recv: the receiving tensor {} must be contiguous",
              describe(t.dtype(), t.shape()));
    check_nccl(ncclRecv(t.data_ptr(), t.nbytes(), ncclUint8, src, comm_, stream()), "ncclRecv");
    t.impl()->storage->bump_version();
  }

  void all_reduce_sum(Tensor& t) override {
    check_tensor(*this, t, "all_reduce_sum");
    MEL_CHECK(t.is_contiguous(), "all_reduce_sum: the tensor must be contiguous");
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                             nccl_type(t.dtype()), ncclSum, comm_, stream()),
               "ncclAllReduce");
    t.impl()->storage->bump_version();
  }

  void broadcast(Tensor& t, int root) override {
    check_tensor(*this, t, "broadcast");
    MEL_CHECK(t.is_contiguous(), "broadcast: the tensor must be contiguous");
    check_nccl(
        ncclBroadcast(t.data_ptr(), t.data_ptr(), t.nbytes(), ncclUint8, root, comm_, stream()),
        "ncclBroadcast");
    t.impl()->storage->bump_version();
  }

  Tensor all_gather(const Tensor& t) override {
    check_tensor(*this, t, "all_gather");
    const Tensor c = t.detach().contiguous();
    Shape shape = c.shape();
    shape.insert(shape.begin(), size_);
    Tensor out = empty(shape, c.dtype(), device_);
    check_nccl(ncclAllGather(c.data_ptr(), out.data_ptr(), c.nbytes(), ncclUint8, comm_, stream()),
               "ncclAllGather");
    return out;
  }

  void barrier() override {
    Tensor one = ones({1}, DType::f32, device_);
    all_reduce_sum(one);
    synchronize(device_);
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    ncclComm_t sub = nullptr;
    check_nccl(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit");
    return std::make_unique<NcclCommunicator>(sub, device_);
  }

 private:
  cudaStream_t stream() const { return cuda_stream(device_); }

  ncclComm_t comm_;
  Device device_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> nccl_communicator(Communicator& bootstrap, Device device) {
  MEL_CHECK(device.is_cuda(), "nccl: needs a GPU device, got {}", device.str());
  MEL_CHECK(bootstrap.device().is_cpu(), "nccl: the bootstrap communicator must move CPU tensors");
  check_device_available(device);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (bootstrap.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  Tensor bytes = zeros({static_cast<int64_t>(sizeof id)}, DType::u8);
  std::memcpy(bytes.data_ptr(), &id, sizeof id);
  bootstrap.broadcast(bytes, 0);
  std::memcpy(&id, bytes.data_ptr(), sizeof id);
  MEL_CUDA_CHECK(cudaSetDevice(device.index));
  ncclComm_t comm = nullptr;
  check_nccl(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()), "ncclCommInitRank");
  return std::make_unique<NcclCommunicator>(comm, device);
}

#endif  // MEL_HAVE_NCCL

}  // namespace mel::dist
