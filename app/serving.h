// Serving an exported ensemble: the messages servers and clients exchange over ZeroMQ, and one
// server's part of the model (`mel serve`).
//
// Wire format (one ZeroMQ multipart message per request or reply; documented in
// docs/ARCHITECTURE.md): frame 0 is a UTF-8 JSON header with "type", "id" and, under "tensors",
// one {"name", "dtype", "shape"} entry per following frame; each following frame holds one tensor's
// raw little-endian bytes in C order (numel * dtype size bytes). A client talks to each server on
// a DEALER socket connected to the server's ROUTER; each server publishes heartbeats (one JSON
// frame every heartbeat interval) on a PUB socket whose port its hello reply names.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "app/ensemble_config.h"
#include "core/tensor.h"

namespace mel::app::serving {

struct Message {
  Json header;
  std::vector<std::pair<std::string, Tensor>> tensors;
  // The tensor called `name`, or nullptr.
  const Tensor* find(const std::string& name) const;
};

// The frames of a message (header JSON, then one frame per tensor).
std::vector<std::string> encode(const Message& m);
// Parses frames [first, end) of a multipart message; a malformed one (header not JSON, a tensor
// entry without a valid dtype or shape, a frame whose size is not the tensor's) gives false and
// a reason in `error`.
bool decode(const std::vector<std::string>& frames, size_t first, Message& m, std::string& error);

// RAII ZeroMQ context and socket (linger 0: closing never waits for unsent messages).
class Context {
 public:
  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  void* get() const { return ctx_; }

 private:
  void* ctx_;
};

class Socket {
 public:
  Socket(Context& ctx, int type);
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  void* get() const { return s_; }
  // Binds; an endpoint in use or malformed is an error naming it. Returns the bound endpoint
  // (the port chosen for "tcp://HOST:*").
  std::string bind(const std::string& endpoint);
  void connect(const std::string& endpoint);
  // Sends every frame; false (nothing sent) when the socket would block, e.g. a DEALER with
  // ZMQ_IMMEDIATE and no live connection. Adds the bytes sent to *bytes.
  bool send(const std::vector<std::string>& frames, bool dontwait, size_t* bytes = nullptr);
  // Receives one whole multipart message if one is waiting (false when none).
  bool try_recv(std::vector<std::string>& frames, size_t* bytes = nullptr);
  // Waits up to `timeout_ms` for a message on this socket.
  bool wait(int timeout_ms);
  void set_int(int option, int value);
  void subscribe_all();

 private:
  void* s_;
};

// "tcp://HOST:PORT" -> HOST and PORT; anything else is an error naming `what`.
void split_tcp(const std::string& endpoint, const std::string& what, std::string& host,
               std::string& port);

// One server's part of an exported ensemble, from `upstream_<i>.safetensors` or
// `combination.safetensors` (written by `mel export`).
struct ServerPart {
  std::string file;
  std::string name;  // "1".."M" or "C"
  int index = -1;    // upstream index (0-based), -1 for C
  std::string run;   // the run's fingerprint, the same in every file of one export
  MelConfig config;
  std::shared_ptr<method::Ensemble> model;  // the whole ensemble, this server's weights loaded
  Shape input;                              // per sample
  std::vector<Shape> feature_shapes;        // per upstream, per sample
  int64_t exit_classes = 0, num_classes = 0;
  int heartbeat_port = 0;  // set by serve()
  bool is_combiner() const { return index < 0; }
  // The hello reply's fields.
  Json info() const;
};
ServerPart load_server_part(const std::string& file, const std::string& device);

// The head C answers with when the features of `alive` (sorted 0-based upstream indices) arrived:
// h_alive when listed, else the largest listed subset of it (ties: the first listed); -1 if none.
int head_for(const method::EnsembleSpec& spec, const std::vector<int>& alive);

struct ServeOptions {
  std::string file;
  std::string bind = "tcp://127.0.0.1:*";
  int heartbeat_ms = 10;
  std::string device = "cpu";
};
// Runs the server until SIGTERM / SIGINT. Prints one line "mel serve: server NAME ready on
// ENDPOINT, heartbeats on ENDPOINT" to stdout once it accepts requests.
void serve(const ServeOptions& o);

// A run fingerprint over a model's config and every weight (FNV-1a 64, hex).
std::string run_fingerprint(const std::string& config_json, const nn::Module& model);

}  // namespace mel::app::serving
