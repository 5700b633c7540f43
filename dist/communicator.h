// The communicator: what MEL's placed training and data parallelism need from a group of ranks
// (send/recv of tensors, all-reduce, all-gather, broadcast, barrier, sub-groups), with one
// interface over three backends: in-process threads, MPI processes and NCCL on GPUs.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mel::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "inprocess", "mpi" or "nccl".
  virtual std::string backend() const = 0;
  // Where this communicator's tensors must live: the CPU, or the GPU of an NCCL communicator.
  virtual Device device() const { return Device::cpu(); }

  // Sends `t` (any dtype; a non-contiguous tensor is copied first) to rank `dst`. Messages between
  // two ranks arrive in the order they were sent. CPU backends return once `t` may be reused;
  // NCCL queues the send on the device's stream.
  virtual void send(const Tensor& t, int dst) = 0;
  // Receives the next message from rank `src` into `t`, which must be contiguous with the shape
  // and dtype the sender sent (a mismatch is an error naming both).
  virtual void recv(Tensor& t, int src) = 0;
  // t = the sum of every rank's t, in place. The CPU backends add in rank order (rank 0 first),
  // so every rank gets bitwise the same result whatever the backend.
  virtual void all_reduce_sum(Tensor& t) = 0;
  // t = rank `root`'s t, in place (same shape and dtype on every rank).
  virtual void broadcast(Tensor& t, int root) = 0;
  // [size, ...t.shape]: every rank's t, by rank (same shape and dtype on every rank).
  virtual Tensor all_gather(const Tensor& t) = 0;
  virtual void barrier() = 0;
  // Collective: ranks passing the same color form a new communicator, ordered by key, then by
  // their rank here (MPI_Comm_split). Every rank gets its group's communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
  // How long this rank's receives wait for a silent peer before failing (MPI; the in-process
  // backend keeps its world's timeout, NCCL its bootstrap's).
  virtual void set_timeout(std::chrono::milliseconds timeout) { (void)timeout; }
};

// Checks that `t` can be communicated by `comm` (defined, on the communicator's device); `op` and
// `what` name the call in the error.
void check_tensor(const Communicator& comm, const Tensor& t, const char* op);

// A short description for errors: "f32 [256, 640]".
std::string describe(DType dtype, const Shape& shape);

}  // namespace mel::dist
