#include "app/serving.h"

#include <fmt/format.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <limits>
#include <thread>

#include "core/autograd.h"
#include "core/factory.h"
#include "core/json_reader.h"
#include "core/ops_index.h"
#include "core/safetensors.h"
#include "data/speech.h"
#include "data/transforms.h"
#include "kernels/strided.h"
#include "mel/failure.h"
#include "train/device.h"

namespace mel::app::serving {

const Tensor* Message::find(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return &t;
  }
  return nullptr;
}

std::vector<std::string> encode(const Message& m) {
  Json header = m.header;
  Json list = Json::array();
  std::vector<std::string> frames(1);
  for (const auto& [name, t] : m.tensors) {
    const Tensor c = t.to(Device::cpu()).contiguous();
    list.push_back({{"name", name}, {"dtype", dtype_name(c.dtype())}, {"shape", c.shape()}});
    frames.emplace_back(static_cast<const char*>(c.data_ptr()), c.nbytes());
  }
  header["tensors"] = std::move(list);
  frames[0] = header.dump();
  return frames;
}

bool decode(const std::vector<std::string>& frames, size_t first, Message& m, std::string& error) {
  // Never throws: the server calls it on whatever arrives. Values from the message are quoted in
  // `error` as short excerpts.
  m = Message{};
  if (frames.size() <= first) {
    error = "an empty message (no header frame)";
    return false;
  }
  m.header = Json::parse(frames[first], nullptr, false);
  if (m.header.is_discarded() || !m.header.is_object()) {
    error = fmt::format("the header frame ({} bytes) is not a JSON object", frames[first].size());
    m.header = Json();
    return false;
  }
  // Read by every receiver next (`value("type", "")`), so its type is part of the format.
  if (m.header.contains("type") && !m.header["type"].is_string()) {
    error =
        fmt::format("the header's \"type\" is {}, not a string", json_excerpt(m.header["type"]));
    m.header = Json();
    return false;
  }
  const Json list = m.header.contains("tensors") ? m.header["tensors"] : Json::array();
  if (!list.is_array()) {
    error = "the header's \"tensors\" is not a list";
    return false;
  }
  if (list.size() != frames.size() - first - 1) {
    error = fmt::format("the header lists {} tensor(s) but {} data frame(s) follow", list.size(),
                        frames.size() - first - 1);
    return false;
  }
  // At most 2^34 elements per tensor; `span`, the product of the sizes with 0 counted as 1, is
  // held to the same bound so that the strides of an empty tensor stay addressable too.
  constexpr int64_t kMaxElements = int64_t{1} << 34;
  for (size_t k = 0; k < list.size(); ++k) {
    const Json& e = list[k];
    if (!e.is_object() || !e.contains("name") || !e["name"].is_string() || !e.contains("dtype") ||
        !e["dtype"].is_string() || !e.contains("shape") || !e["shape"].is_array()) {
      error = fmt::format("tensor entry {} is not {{\"name\", \"dtype\", \"shape\"}}", k);
      return false;
    }
    const std::string name = e["name"].get<std::string>();
    const std::string dt = e["dtype"].get<std::string>();
    if (dt != "f32" && dt != "u8" && dt != "i64") {
      error = fmt::format("tensor '{}' has dtype '{}' (expected f32, u8 or i64)",
                          text_excerpt(name), text_excerpt(dt));
      return false;
    }
    if (e["shape"].size() > static_cast<size_t>(kernels::kMaxDims)) {
      error = fmt::format("tensor '{}' has {} dimensions (at most {})", text_excerpt(name),
                          e["shape"].size(), kernels::kMaxDims);
      return false;
    }
    Shape shape;
    int64_t numel = 1, span = 1;
    for (const Json& d : e["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (1LL << 31)) {
        error = fmt::format("tensor '{}' has a malformed shape {}", text_excerpt(name),
                            json_excerpt(e["shape"]));
        return false;
      }
      shape.push_back(d.get<int64_t>());
      const int64_t f = std::max<int64_t>(shape.back(), 1);
      if (span > kMaxElements / f) {
        error = fmt::format("tensor '{}' is too large ({})", text_excerpt(name),
                            json_excerpt(e["shape"]));
        return false;
      }
      span *= f;
      numel *= shape.back();
    }
    const DType dtype = parse_dtype(dt);
    const std::string& data = frames[first + 1 + k];
    const size_t want = static_cast<size_t>(numel) * dtype_size(dtype);
    if (data.size() != want) {
      error = fmt::format("tensor '{}' {} {} needs {} bytes, its frame has {}", text_excerpt(name),
                          dt, text_excerpt(shape_str(shape)), want, data.size());
      return false;
    }
    Tensor t = empty(shape, dtype);
    if (want > 0) std::memcpy(t.data_ptr(), data.data(), want);
    m.tensors.emplace_back(name, std::move(t));
  }
  return true;
}

Context::Context() : ctx_(zmq_ctx_new()) {
  MEL_CHECK(ctx_ != nullptr, "zmq_ctx_new: {}", zmq_strerror(zmq_errno()));
}
Context::~Context() {
  zmq_ctx_term(ctx_);
}

Socket::Socket(Context& ctx, int type) : s_(zmq_socket(ctx.get(), type)) {
  MEL_CHECK(s_ != nullptr, "zmq_socket: {}", zmq_strerror(zmq_errno()));
  set_int(ZMQ_LINGER, 0);
}
Socket::~Socket() {
  zmq_close(s_);
}

void Socket::set_int(int option, int value) {
  MEL_CHECK(zmq_setsockopt(s_, option, &value, sizeof value) == 0, "zmq_setsockopt({}): {}", option,
            zmq_strerror(zmq_errno()));
}

void Socket::subscribe_all() {
  MEL_CHECK(zmq_setsockopt(s_, ZMQ_SUBSCRIBE, "", 0) == 0, "zmq_setsockopt(ZMQ_SUBSCRIBE): {}",
            zmq_strerror(zmq_errno()));
}

std::string Socket::bind(const std::string& endpoint) {
  if (zmq_bind(s_, endpoint.c_str()) != 0) {
    const int e = zmq_errno();
    fail("cannot bind {}: {}{}", endpoint, zmq_strerror(e),
         e == EADDRINUSE ? " (another process listens on that port; pick another or use port *)"
                         : "");
  }
  char buf[512];
  size_t len = sizeof buf;
  MEL_CHECK(zmq_getsockopt(s_, ZMQ_LAST_ENDPOINT, buf, &len) == 0, "zmq_getsockopt: {}",
            zmq_strerror(zmq_errno()));
  return std::string(buf);
}

void Socket::connect(const std::string& endpoint) {
  MEL_CHECK(zmq_connect(s_, endpoint.c_str()) == 0, "cannot connect to {}: {}", endpoint,
            zmq_strerror(zmq_errno()));
}

bool Socket::send(const std::vector<std::string>& frames, bool dontwait, size_t* bytes) {
  for (size_t i = 0; i < frames.size(); ++i) {
    const int flags = (i + 1 < frames.size() ? ZMQ_SNDMORE : 0) | (dontwait ? ZMQ_DONTWAIT : 0);
    if (zmq_send(s_, frames[i].data(), frames[i].size(), flags) < 0) {
      const int e = zmq_errno();
      if (i == 0 && e == EAGAIN) return false;
      fail("zmq_send: {}", zmq_strerror(e));
    }
    if (bytes) *bytes += frames[i].size();
  }
  return true;
}

bool Socket::try_recv(std::vector<std::string>& frames, size_t* bytes) {
  frames.clear();
  for (;;) {
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    const int rc = zmq_msg_recv(&msg, s_, frames.empty() ? ZMQ_DONTWAIT : 0);
    if (rc < 0) {
      const int e = zmq_errno();
      zmq_msg_close(&msg);
      if (frames.empty() && (e == EAGAIN || e == EINTR)) return false;
      fail("zmq_msg_recv: {}", zmq_strerror(e));
    }
    frames.emplace_back(static_cast<const char*>(zmq_msg_data(&msg)), zmq_msg_size(&msg));
    if (bytes) *bytes += zmq_msg_size(&msg);
    const bool more = zmq_msg_more(&msg) != 0;
    zmq_msg_close(&msg);
    if (!more) return true;
  }
}

bool Socket::wait(int timeout_ms) {
  zmq_pollitem_t item{s_, 0, ZMQ_POLLIN, 0};
  const int rc = zmq_poll(&item, 1, timeout_ms);
  return rc > 0 && (item.revents & ZMQ_POLLIN);
}

void split_tcp(const std::string& endpoint, const std::string& what, std::string& host,
               std::string& port) {
  const std::string prefix = "tcp://";
  const size_t colon = endpoint.rfind(':');
  MEL_CHECK(endpoint.rfind(prefix, 0) == 0 && colon != std::string::npos && colon > prefix.size() &&
                colon + 1 < endpoint.size(),
            "{}: '{}' is not a tcp://HOST:PORT address", what, endpoint);
  host = endpoint.substr(prefix.size(), colon - prefix.size());
  port = endpoint.substr(colon + 1);
  MEL_CHECK(port == "*" || port.find_first_not_of("0123456789") == std::string::npos,
            "{}: '{}' has port '{}', expected a number or *", what, endpoint, port);
}

std::string run_fingerprint(const std::string& config_json, const nn::Module& model) {
  uint64_t h = 1469598103934665603ULL;
  auto add = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ULL;
  };
  add(config_json.data(), config_json.size());
  for (const auto& [name, t] : model.state_dict()) {
    add(name.data(), name.size());
    const Tensor c = t.to(Device::cpu()).contiguous();
    add(c.data_ptr(), c.nbytes());
  }
  return fmt::format("{:016x}", h);
}

namespace {

Shape json_shape(const Json& j) {
  return Shape(j.begin(), j.end());
}

// The upstream entry of the ensemble config for model i (one object for all, or a list).
const Json& upstream_json(const Json& ensemble, int i) {
  const Json& up = ensemble.at("upstream");
  return up.is_array() ? up.at(static_cast<size_t>(i)) : up;
}

}  // namespace

ServerPart load_server_part(const std::string& file, const std::string& device) {
  const SafetensorsFile f = load_safetensors(file);
  auto meta = [&](const std::string& key) {
    const auto it = f.metadata.find(key);
    return it == f.metadata.end() ? std::string() : it->second;
  };
  MEL_CHECK(meta("format") == "mel-server-1",
            "{}: not a server file of `mel export` (metadata \"format\" is '{}', expected "
            "'mel-server-1')",
            file, meta("format"));
  MEL_CHECK(!meta("run").empty(),
            "{}: the file has no run fingerprint (metadata \"run\"); it was written by an older "
            "`mel export`: export the run again",
            file);
  Json cfg = Json::parse(meta("config"), nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", file);
  ServerPart p;
  p.file = file;
  p.run = meta("run");
  p.name = meta("server");
  RunOverrides ov;
  ov.device = device;
  p.config = parse_mel_config(std::move(cfg), file + " (stored config)", ov);
  p.model = build_ensemble_model(p.config);
  const int M = p.model->spec.M;
  if (p.name == "C") {
    nn::NamedTensors heads;
    for (const auto& [name, t] : f.tensors) {
      MEL_CHECK(name.rfind("heads.", 0) == 0,
                "{}: tensor '{}' is not a head's (expected names heads.<subset>.*)", file, name);
      heads.emplace_back(name.substr(6), t);
    }
    p.model->child("heads")->load_state_dict(heads, true);
  } else {
    int i = 0;
    try {
      i = std::stoi(p.name);
    } catch (const std::exception&) {
      i = 0;
    }
    MEL_CHECK(i >= 1 && i <= M, "{}: metadata \"server\" is '{}', expected 1..{} or C", file,
              p.name, M);
    p.index = i - 1;
    p.model->upstreams[static_cast<size_t>(p.index)]->load_state_dict(f.tensors, true);
  }
  const Device dev = train::run_device(device, "mel serve");
  p.model->to(dev);
  p.model->eval();
  p.input = json_shape(upstream_json(p.config.json["ensemble"], std::max(p.index, 0)).at("input"));
  for (const auto& u : p.model->upstreams) p.feature_shapes.push_back(u->feature_shape);
  p.exit_classes = p.config.exit_classes;
  p.num_classes = p.config.data.num_classes();
  return p;
}

Json ServerPart::info() const {
  Json j = {{"server", name},
            {"run", run},
            {"run_name", config.name},
            {"models", model->spec.M},
            {"input", input},
            {"feature_shapes", feature_shapes},
            {"exit_classes", exit_classes},
            {"num_classes", num_classes},
            {"heartbeat_port", heartbeat_port},
            {"pid", static_cast<int64_t>(getpid())}};
  Json subsets = Json::array();
  for (const auto& s : model->spec.head_subsets) subsets.push_back(method::subset_name(s));
  j["subsets"] = subsets;
  return j;
}

int head_for(const method::EnsembleSpec& spec, const std::vector<int>& alive) {
  int best = -1;
  size_t best_size = 0;
  for (size_t k = 0; k < spec.head_subsets.size(); ++k) {
    const auto& s = spec.head_subsets[k];
    bool inside = true;
    for (int i : s) inside = inside && std::find(alive.begin(), alive.end(), i) != alive.end();
    if (inside && s.size() > best_size) {
      best = static_cast<int>(k);
      best_size = s.size();
    }
  }
  return best;
}

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_stop_signal(int) {
  g_stop = 1;
}

// An injected fault (control messages): replies delayed, dropped, of a wrong shape, or NaN.
struct Fault {
  std::string kind = "none";
  int ms = 0;
};

Message error_reply(const Json& id, const std::string& why) {
  return Message{{{"type", "error"}, {"id", id}, {"message", why}}, {}};
}

// Checks that a request's tensor exists with the given dtype and per-sample shape; returns it.
const Tensor& request_tensor(const Message& m, const std::string& name, DType dtype,
                             const Shape& sample) {
  const Tensor* t = m.find(name);
  MEL_CHECK(t != nullptr, "the request has no tensor '{}'", name);
  Shape want = sample;
  want.insert(want.begin(), t->dim() > 0 ? t->size(0) : 0);
  MEL_CHECK(t->dtype() == dtype && t->shape() == want && t->size(0) > 0,
            "tensor '{}' is {} {}, expected {} [N, {}] with N >= 1", name, dtype_name(t->dtype()),
            shape_str(t->shape()), dtype_name(dtype), fmt::join(sample, ", "));
  return *t;
}

Message handle(const ServerPart& p, const Message& req, Fault& fault) {
  const std::string type = req.header.value("type", std::string());
  const Json id = req.header.contains("id") ? req.header["id"] : Json(nullptr);
  if (type == "hello") {
    Json h = p.info();
    h["type"] = "hello";
    h["id"] = id;
    return Message{h, {}};
  }
  if (type == "control") {
    const std::string kind = req.header.value("fault", std::string("none"));
    MEL_CHECK(
        kind == "none" || kind == "delay" || kind == "drop" || kind == "garbage" || kind == "nan",
        "unknown fault '{}' (expected none, delay, drop, garbage or nan)", kind);
    fault.kind = kind;
    fault.ms = req.header.value("ms", 0);
    return Message{{{"type", "control"}, {"id", id}, {"fault", kind}, {"ms", fault.ms}}, {}};
  }
  autograd::NoGradGuard ng;
  const Device dev = p.model->upstreams[0]->backbone->parameters().empty()
                         ? Device::cpu()
                         : p.model->upstreams[0]->backbone->parameters()[0].device();
  if (type == "features") {
    MEL_CHECK(!p.is_combiner(), "server C answers \"predict\", not \"features\"");
    // u8 pixels, or f32 log-mel features for spoken words (normalised here, as in training)
    const bool features = p.config.data.dataset == data::kSpokenWordsName;
    const Tensor& x = request_tensor(req, "x", features ? DType::f32 : DType::u8, p.input);
    const Tensor xn = data::normalize_images(x, p.config.data.mean, p.config.data.std).to(dev);
    auto& up = *p.model->upstreams[static_cast<size_t>(p.index)];
    const Tensor f = up.backbone->forward(xn);
    const Tensor logits = up.exit->forward(f);
    return Message{{{"type", "features"}, {"id", id}, {"server", p.name}},
                   {{"exit_logits", logits.to(Device::cpu())}, {"features", f.to(Device::cpu())}}};
  }
  if (type == "predict") {
    MEL_CHECK(p.is_combiner(), "upstream server {} answers \"features\", not \"predict\"", p.name);
    const Json ups = req.header.value("upstreams", Json::array());
    MEL_CHECK(ups.is_array() && !ups.empty(), "\"upstreams\" must list the upstreams sent");
    std::vector<int> alive;
    std::vector<Tensor> features(static_cast<size_t>(p.model->spec.M));
    int64_t n = -1;
    for (const Json& u : ups) {
      MEL_CHECK(u.is_number_integer() && u.get<int>() >= 1 && u.get<int>() <= p.model->spec.M,
                "\"upstreams\" entry {} is not 1..{}", u.dump(), p.model->spec.M);
      const int i = u.get<int>() - 1;
      MEL_CHECK(alive.empty() || i > alive.back(), "\"upstreams\" must be increasing");
      const Tensor& f = request_tensor(req, fmt::format("features_{}", i + 1), DType::f32,
                                       p.feature_shapes[static_cast<size_t>(i)]);
      MEL_CHECK(n < 0 || f.size(0) == n, "features_{} has {} samples, the others {}", i + 1,
                f.size(0), n);
      n = f.size(0);
      alive.push_back(i);
      features[static_cast<size_t>(i)] = f.to(dev);
    }
    const int k = head_for(p.model->spec, alive);
    MEL_CHECK(k >= 0, "no head combines a subset of upstreams {}", ups.dump());
    std::vector<Tensor> parts;
    for (int i : p.model->spec.head_subsets[static_cast<size_t>(k)])
      parts.push_back(features[static_cast<size_t>(i)]);
    const Tensor logits = p.model->heads[static_cast<size_t>(k)]->forward(concat(parts, 1));
    return Message{
        {{"type", "predictions"},
         {"id", id},
         {"server", p.name},
         {"head", method::subset_name(p.model->spec.head_subsets[static_cast<size_t>(k)])}},
        {{"logits", logits.to(Device::cpu())}}};
  }
  fail("unknown message type '{}' (expected hello, control, features or predict)", type);
}

// What a faulty server sends instead: tensors one column wider, or NaN.
void corrupt(Message& m, const std::string& kind) {
  for (auto& [name, t] : m.tensors) {
    Shape s = t.shape();
    if (kind == "garbage") {
      s.back() += 1;
      t = full(s, 12345.0);
    } else {
      t = full(s, std::numeric_limits<double>::quiet_NaN());
    }
  }
}

}  // namespace

void serve(const ServeOptions& o) {
  MEL_CHECK(o.heartbeat_ms > 0, "mel serve: --heartbeat-ms must be > 0, got {}", o.heartbeat_ms);
  std::string host, port;
  split_tcp(o.bind, "mel serve --bind", host, port);
  ServerPart part = load_server_part(o.file, o.device);
  Context ctx;
  Socket router(ctx, ZMQ_ROUTER);
  const std::string endpoint = router.bind(o.bind);
  Socket pub(ctx, ZMQ_PUB);
  const std::string hb = pub.bind(fmt::format("tcp://{}:*", host));
  std::string hb_host, hb_port;
  split_tcp(hb, "heartbeat endpoint", hb_host, hb_port);
  part.heartbeat_port = std::stoi(hb_port);

  g_stop = 0;
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::atomic<bool> stop{false};
  std::thread beat([&] {
    int64_t seq = 0;
    while (!stop.load()) {
      const Json h = {{"server", part.name}, {"seq", seq++}, {"run", part.run}};
      pub.send({h.dump()}, true);
      std::this_thread::sleep_for(std::chrono::milliseconds(o.heartbeat_ms));
    }
  });
  fmt::print("mel serve: server {} ready on {}, heartbeats on {}\n", part.name, endpoint, hb);
  std::fflush(stdout);

  Fault fault;
  std::vector<std::string> frames;
  while (!g_stop) {
    if (!router.wait(100)) continue;
    while (!g_stop && router.try_recv(frames)) {
      if (frames.size() < 2) continue;  // identity and at least a header
      Message req, reply;
      std::string err;
      Json id = nullptr;
      if (!decode(frames, 1, req, err)) {
        reply = error_reply(nullptr, "bad request: " + err);
      } else {
        id = req.header.contains("id") ? req.header["id"] : Json(nullptr);
        try {
          reply = handle(part, req, fault);
        } catch (const std::exception& e) {
          reply = error_reply(id, e.what());
        }
      }
      const bool control = req.header.is_object() && req.header.value("type", "") != "features" &&
                           req.header.value("type", "") != "predict";
      if (!control) {
        if (fault.kind == "drop") continue;
        if (fault.kind == "delay" && fault.ms > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(fault.ms));
        if (fault.kind == "garbage" || fault.kind == "nan") corrupt(reply, fault.kind);
      }
      std::vector<std::string> out = encode(reply);
      out.insert(out.begin(), frames[0]);
      router.send(out, false);
    }
  }
  stop = true;
  beat.join();
}

}  // namespace mel::app::serving
