#include "app/simulate.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "app/chart.h"
#include "app/ensemble_run.h"
#include "app/serving.h"
#include "core/factory.h"
#include "core/safetensors.h"
#include "data/dataset.h"
#include "data/npy.h"
#include "mel/failure.h"
#include "train/files.h"

namespace mel::app {
namespace {

using Clock = std::chrono::steady_clock;
using serving::Message;
using serving::Socket;

double ms_since(Clock::time_point t0, Clock::time_point t1 = Clock::now()) {
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// ---- the failure schedule ---------------------------------------------------------------------

struct Event {
  std::string action;  // kill, stop, cont, restart, delay, drop, garbage, nan, heal
  std::string server;  // "1".."M" or "C"
  int ms = 0;          // delay
  int64_t at = 0;      // before request `at`
  std::string text;    // as written
};

std::vector<Event> parse_schedule(const std::string& s, int M, int64_t requests, bool processes) {
  std::vector<Event> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    auto bad = [&](const std::string& why) {
      fail(
          "--schedule: '{}': {} (items are ACTION:SERVER@REQUEST, e.g. kill:2@40, delay:1=300@5; "
          "actions kill, stop, cont, restart, delay, drop, garbage, nan, heal)",
          item, why);
    };
    const size_t colon = item.find(':'), at = item.rfind('@');
    if (colon == std::string::npos || at == std::string::npos || at < colon) bad("malformed");
    Event e;
    e.text = item;
    e.action = item.substr(0, colon);
    std::string server = item.substr(colon + 1, at - colon - 1);
    const size_t eq = server.find('=');
    if (eq != std::string::npos) {
      const std::string ms = server.substr(eq + 1);
      server = server.substr(0, eq);
      if (e.action != "delay") bad("only delay takes =MS");
      if (ms.empty() || ms.find_first_not_of("0123456789") != std::string::npos || ms.size() > 7)
        bad("the delay must be whole milliseconds");
      e.ms = std::stoi(ms);
    }
    static const std::set<std::string> kActions = {"kill", "stop",    "cont", "restart", "delay",
                                                   "drop", "garbage", "nan",  "heal"};
    if (!kActions.count(e.action)) bad(fmt::format("unknown action '{}'", e.action));
    if (e.action == "delay" && e.ms <= 0) bad("delay needs =MS with MS > 0, e.g. delay:2=300@5");
    bool known = server == "C";
    for (int i = 1; i <= M; ++i) known = known || server == std::to_string(i);
    if (!known) bad(fmt::format("server '{}' is not 1..{} or C", server, M));
    e.server = server;
    const std::string when = item.substr(at + 1);
    if (when.empty() || when.find_first_not_of("0123456789") != std::string::npos ||
        when.size() > 12)
      bad("the request index must be a whole number");
    e.at = std::stoll(when);
    if (e.at >= requests)
      bad(fmt::format("request {} is past the last one ({})", e.at, requests - 1));
    const bool process =
        e.action == "kill" || e.action == "stop" || e.action == "cont" || e.action == "restart";
    if (process && !processes)
      bad("kill, stop, cont and restart act on processes mel simulate started (not with "
          "--servers)");
    out.push_back(e);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const Event& a, const Event& b) { return a.at < b.at; });
  return out;
}

// ---- server processes --------------------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  int out_fd = -1;
  bool stopped = false;
};

// Starts `mel serve FILE` with its stdout on a pipe (for the ready line) and stderr appended to
// `log`; returns the endpoint it listens on.
std::string start_server(const SimulateOptions& o, const std::string& bin, const std::string& name,
                         const std::string& file, const std::string& log, Child& child) {
  std::vector<std::string> args = {bin,
                                   "serve",
                                   file,
                                   "--bind",
                                   "tcp://127.0.0.1:*",
                                   "--heartbeat-ms",
                                   std::to_string(o.heartbeat_ms),
                                   "--device",
                                   o.device};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string(*e).rfind("OMP_NUM_THREADS=", 0) != 0) env.emplace_back(*e);
  }
  env.push_back(fmt::format("OMP_NUM_THREADS={}", o.server_threads));
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  int fds[2];
  MEL_CHECK(pipe(fds) == 0, "mel simulate: pipe: {}", std::strerror(errno));
  const int logfd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  MEL_CHECK(logfd >= 0, "mel simulate: cannot open {}: {}", log, std::strerror(errno));
  const pid_t pid = fork();
  MEL_CHECK(pid >= 0, "mel simulate: fork: {}", std::strerror(errno));
  if (pid == 0) {
    // A server never outlives the client that started it, even one killed with SIGKILL.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(fds[1], 1);
    dup2(logfd, 2);
    close(fds[0]);
    execve(bin.c_str(), argv.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  close(logfd);
  child.pid = pid;
  child.out_fd = fds[0];
  child.stopped = false;
  // The ready line: "mel serve: server NAME ready on ENDPOINT, heartbeats on ENDPOINT".
  std::string line;
  const auto t0 = Clock::now();
  while (line.find('\n') == std::string::npos) {
    const int left = o.start_timeout_ms - static_cast<int>(ms_since(t0));
    pollfd p{child.out_fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, std::max(left, 0)) <= 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      child.pid = -1;
      fail("mel simulate: server {} ({}) was not ready within {} ms; its log: {}", name, file,
           o.start_timeout_ms, log);
    }
    char buf[256];
    const ssize_t n = read(child.out_fd, buf, sizeof buf);
    if (n <= 0) {
      int status = 0;
      waitpid(pid, &status, 0);
      child.pid = -1;
      std::string tail;
      if (FILE* f = std::fopen(log.c_str(), "r")) {
        char b[4096];
        const size_t got = std::fread(b, 1, sizeof b - 1, f);
        std::fclose(f);
        tail.assign(b, got);
      }
      while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
      fail("mel simulate: server {} ({}) exited before it was ready{}", name, file,
           tail.empty() ? std::string(" (no output)") : ": " + tail);
    }
    line.append(buf, static_cast<size_t>(n));
  }
  const size_t on = line.find(" ready on "), comma = line.find(", heartbeats");
  MEL_CHECK(on != std::string::npos && comma != std::string::npos && comma > on,
            "mel simulate: server {} printed '{}' instead of its ready line", name,
            line.substr(0, line.find('\n')));
  return line.substr(on + 10, comma - on - 10);
}

void end_child(Child& c, int sig) {
  if (c.pid <= 0) return;
  if (sig != SIGKILL) kill(c.pid, SIGCONT);
  kill(c.pid, sig);
  const auto t0 = Clock::now();
  int status = 0;
  while (waitpid(c.pid, &status, WNOHANG) == 0) {
    if (ms_since(t0) > 3000) {
      kill(c.pid, SIGKILL);
      waitpid(c.pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (c.out_fd >= 0) close(c.out_fd);
  c.pid = -1;
  c.out_fd = -1;
}

// ---- the client's view of one server ---------------------------------------------------------

struct Link {
  std::string name;      // "1".."M", "C"
  std::string file;      // started servers: the exported file
  std::string endpoint;  // requests
  std::unique_ptr<Socket> dealer;
  Json info;
  Clock::time_point last_beat;
  bool beat_seen = false;
  Child child;
  size_t bytes_sent = 0, bytes_received = 0;
  int64_t samples_sent = 0, requests_sent = 0, late_replies = 0;
  std::map<std::string, int64_t> outcomes;  // "ok", "no reply within ...", ...
};

Message hello(serving::Context& ctx, Link& l, int timeout_ms) {
  l.dealer = std::make_unique<Socket>(ctx, ZMQ_DEALER);
  l.dealer->set_int(ZMQ_IMMEDIATE, 1);
  l.dealer->connect(l.endpoint);
  const std::vector<std::string> frames =
      serving::encode(Message{{{"type", "hello"}, {"id", -1}}, {}});
  const auto t0 = Clock::now();
  bool sent = false;
  while (!sent && ms_since(t0) < timeout_ms) {
    sent = l.dealer->send(frames, true);
    if (!sent) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<std::string> reply;
  Message m;
  std::string err;
  while (sent) {
    const int left = timeout_ms - static_cast<int>(ms_since(t0));
    if (left <= 0 || !l.dealer->wait(left)) break;
    if (!l.dealer->try_recv(reply)) continue;
    MEL_CHECK(serving::decode(reply, 0, m, err),
              "mel simulate: server {} at {}: bad hello reply: {}", l.name, l.endpoint, err);
    if (m.header.value("type", "") == "hello") return m;
  }
  fail(
      "mel simulate: server {} at {}: no answer to hello within {} ms (is `mel serve` running "
      "there?)",
      l.name, l.endpoint, timeout_ms);
}

// ---- statistics and output -------------------------------------------------------------------

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(q / 100.0 * static_cast<double>(v.size()));
  const size_t i = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size()))) - 1;
  return v[i];
}

struct RequestRecord {
  int64_t id = 0, samples = 0, correct = 0, phase = 0;
  std::string answered_by;  // "1+2" head, "1,2" averaged exits, "1" one exit, "" failed
  std::string failure;      // why no answer
  double latency_ms = 0.0;
  std::vector<std::string> status;  // per server (upstreams, then C): "ok", or why not
};

std::string rule_of(const std::string& answer) {
  if (answer.empty()) return "failed";
  if (answer.find('+') != std::string::npos) return "head";
  if (answer.find(',') != std::string::npos) return "averaged exits";
  return "one exit";
}

std::string timeline_svg(const std::vector<RequestRecord>& reqs, const std::vector<Event>& events,
                         const std::vector<std::string>& names, const std::string& title) {
  const double W = 960, left = 70, right = 20, top = 50, plot_h = 220, lane_h = 18;
  const double lanes_top = top + plot_h + 40;
  const double H = lanes_top + lane_h * static_cast<double>(names.size()) + 60;
  const double n = std::max<double>(1.0, static_cast<double>(reqs.size()));
  const double pw = W - left - right;
  double max_lat = 1.0;
  for (const auto& r : reqs) max_lat = std::max(max_lat, r.latency_ms);
  max_lat *= 1.1;
  auto x_of = [&](double i) { return left + pw * i / n; };
  auto y_of = [&](double ms) { return top + plot_h - plot_h * ms / max_lat; };
  std::string s = fmt::format(
      R"(<svg xmlns="http://www.w3.org/2000/svg" width="{0:.0f}" height="{1:.0f}" viewBox="0 0 {0:.0f} {1:.0f}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">)"
      "\n<title>{2}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      R"svg(<text x="{3:.1f}" y="24" font-size="15" text-anchor="middle">{2}</text>)svg"
      "\n",
      W, H, svg_escape(title), W / 2);
  // Latency axis and grid.
  for (int g = 0; g <= 4; ++g) {
    const double ms = max_lat * g / 4.0;
    s += fmt::format(
        R"svg(<line x1="{0:.1f}" x2="{1:.1f}" y1="{2:.1f}" y2="{2:.1f}" stroke="#ddd"/><text x="{3:.1f}" y="{4:.1f}" font-size="10" text-anchor="end">{5:.0f}</text>)svg"
        "\n",
        left, W - right, y_of(ms), left - 4, y_of(ms) + 3, ms);
  }
  s += fmt::format(
      R"svg(<text transform="translate(18,{:.1f}) rotate(-90)" font-size="11" text-anchor="middle">latency ms</text>)svg"
      "\n",
      top + plot_h / 2);
  const std::map<std::string, const char*> colors = {{"head", "#4c72b0"},
                                                     {"averaged exits", "#55a868"},
                                                     {"one exit", "#dd8452"},
                                                     {"failed", "#c44e52"}};
  for (const auto& r : reqs) {
    s += fmt::format(R"svg(<circle cx="{:.1f}" cy="{:.1f}" r="2.2" fill="{}"/>)svg"
                     "\n",
                     x_of(static_cast<double>(r.id) + 0.5), y_of(r.latency_ms),
                     colors.at(rule_of(r.answered_by)));
  }
  // Legend.
  double lx = left;
  for (const char* k : {"head", "averaged exits", "one exit", "failed"}) {
    s += fmt::format(
        R"svg(<circle cx="{:.1f}" cy="40" r="4" fill="{}"/><text x="{:.1f}" y="44" font-size="11">answered by {}</text>)svg"
        "\n",
        lx, colors.at(k), lx + 8, k);
    lx += 170;
  }
  // One lane per server: its outcome for each request.
  for (size_t k = 0; k < names.size(); ++k) {
    const double y = lanes_top + lane_h * static_cast<double>(k);
    s += fmt::format(
        R"svg(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="end">server {}</text>)svg"
        "\n",
        left - 6, y + 12, svg_escape(names[k]));
    for (const auto& r : reqs) {
      const std::string& st = r.status[k];
      const char* c = st == "ok"                                                   ? "#8fd19e"
                      : st == "not asked"                                          ? "#eeeeee"
                      : st.rfind("bad reply", 0) == 0 || st.rfind("error", 0) == 0 ? "#f0ad4e"
                                                                                   : "#e57373";
      s += fmt::format(
          R"svg(<rect x="{:.2f}" y="{:.1f}" width="{:.2f}" height="{:.1f}" fill="{}"/>)svg"
          "\n",
          x_of(static_cast<double>(r.id)), y, std::max(pw / n, 0.5), lane_h - 4, c);
    }
  }
  // Events.
  for (const auto& e : events) {
    const double x = x_of(static_cast<double>(e.at));
    s += fmt::format(
        R"svg(<line x1="{0:.1f}" x2="{0:.1f}" y1="{1:.1f}" y2="{2:.1f}" stroke="#555" stroke-dasharray="3,3"/><text x="{0:.1f}" y="{3:.1f}" font-size="10" text-anchor="start" transform="rotate(30 {0:.1f} {3:.1f})">{4}</text>)svg"
        "\n",
        x, top, lanes_top + lane_h * static_cast<double>(names.size()), H - 40, svg_escape(e.text));
  }
  s += fmt::format(
      R"svg(<text x="{:.1f}" y="{:.1f}" font-size="11" text-anchor="middle">request</text>)svg"
      "\n",
      left + pw / 2, H - 8);
  s += "</svg>\n";
  return s;
}

// Softmax rows of f32 logits [n, K], in f64.
std::vector<double> softmax_rows(const Tensor& logits) {
  const int64_t n = logits.size(0), K = logits.size(1);
  const float* p = logits.data<float>();
  std::vector<double> out(static_cast<size_t>(n * K));
  for (int64_t r = 0; r < n; ++r) {
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < K; ++c) mx = std::max(mx, static_cast<double>(p[r * K + c]));
    for (int64_t c = 0; c < K; ++c) {
      out[static_cast<size_t>(r * K + c)] = std::exp(static_cast<double>(p[r * K + c]) - mx);
      sum += out[static_cast<size_t>(r * K + c)];
    }
    for (int64_t c = 0; c < K; ++c) out[static_cast<size_t>(r * K + c)] /= sum;
  }
  return out;
}

std::vector<int64_t> argmax_rows(const std::vector<double>& v, int64_t n, int64_t K) {
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const auto* row = v.data() + r * K;
    out[static_cast<size_t>(r)] = std::max_element(row, row + K) - row;
  }
  return out;
}

// Checks a reply tensor: present, f32, [n, ...sample], finite. Returns "" or why not.
std::string check_tensor(const Message& m, const std::string& name, int64_t n,
                         const Shape& sample) {
  const Tensor* t = m.find(name);
  if (!t) return fmt::format("bad reply: no tensor '{}'", name);
  Shape want = sample;
  want.insert(want.begin(), n);
  if (t->dtype() != DType::f32 || t->shape() != want)
    return fmt::format("bad reply: '{}' is {} {}, expected f32 {}", name, dtype_name(t->dtype()),
                       shape_str(t->shape()), shape_str(want));
  const float* p = t->data<float>();
  for (int64_t i = 0; i < t->numel(); ++i) {
    if (!std::isfinite(p[i])) return fmt::format("bad reply: '{}' holds non-finite values", name);
  }
  return "";
}

}  // namespace

Json simulate(const SimulateOptions& o) {
  MEL_CHECK(o.deadline_ms > 0,
            "mel simulate: --deadline-ms must be > 0 (a client deadline of {} "
            "ms answers nothing), got {}",
            o.deadline_ms, o.deadline_ms);
  MEL_CHECK(o.batch > 0, "mel simulate: --batch must be > 0, got {}", o.batch);
  MEL_CHECK(o.rate >= 0 && std::isfinite(o.rate), "mel simulate: --rate must be >= 0, got {}",
            o.rate);
  MEL_CHECK(o.heartbeat_ms > 0, "mel simulate: --heartbeat-ms must be > 0, got {}", o.heartbeat_ms);
  MEL_CHECK(o.liveness_ms > o.heartbeat_ms,
            "mel simulate: --liveness-ms ({}) must exceed --heartbeat-ms ({})", o.liveness_ms,
            o.heartbeat_ms);
  MEL_CHECK(o.server_threads > 0, "mel simulate: --server-threads must be > 0");
  const std::string out = o.out.empty() ? "simulation" : o.out;
  train::ensure_dir(out);

  // The exported files: a folder of `mel export`, or export the run now.
  std::string dir = o.source;
  if (!std::filesystem::exists(dir + "/combination.safetensors")) {
    dir = out + "/servers";
    export_servers(o.source, dir);
  }
  const SafetensorsFile cfile = load_safetensors(dir + "/combination.safetensors");
  const auto cfg_it = cfile.metadata.find("config");
  MEL_CHECK(cfg_it != cfile.metadata.end(), "{}/combination.safetensors: no stored config", dir);
  RunOverrides ov;
  ov.data_dir = o.data_dir;
  const MelConfig config = parse_mel_config(Json::parse(cfg_it->second),
                                            dir + "/combination.safetensors (stored config)", ov);
  auto model = build_ensemble_model(config);
  const int M = model->spec.M;
  std::vector<std::string> names;
  for (int i = 1; i <= M; ++i) names.push_back(std::to_string(i));
  names.push_back("C");
  const size_t C = static_cast<size_t>(M);

  // The test data, in requests of `batch` consecutive samples.
  const data::ImageDataset ds = load_split(config.data, data::Split::test);
  int64_t N = ds.size();
  if (o.test_limit > 0) N = std::min(N, o.test_limit);
  MEL_CHECK(N > 0, "mel simulate: no test samples");
  const int64_t requests = o.requests > 0 ? o.requests : (N + o.batch - 1) / o.batch;
  const bool started = o.servers.empty();
  const std::vector<Event> events = parse_schedule(o.schedule, M, requests, started);
  const std::vector<int64_t> fine(ds.labels.data<int64_t>(), ds.labels.data<int64_t>() + ds.size());
  std::vector<int64_t> coarse = fine;
  if (config.loss.hierarchical) {
    for (int64_t j = 0; j < ds.size(); ++j) {
      coarse[static_cast<size_t>(j)] =
          config.loss.coarse_map.empty()
              ? ds.coarse_labels.data<int64_t>()[j]
              : config.loss.coarse_map[static_cast<size_t>(fine[static_cast<size_t>(j)])];
    }
  }
  const Shape image(ds.images.shape().begin() + 1, ds.images.shape().end());
  const int64_t image_bytes =
      static_cast<int64_t>(ds.images.nbytes()) / std::max<int64_t>(ds.size(), 1);

  // The servers: started here, or given.
  serving::Context ctx;
  std::vector<Link> links(C + 1);
  for (size_t k = 0; k <= C; ++k) links[k].name = names[k];
  struct Fleet {
    std::vector<Link>& links;
    ~Fleet() {
      for (auto& l : links) end_child(l.child, SIGTERM);
    }
  } fleet{links};
  const std::string bin = o.serve_binary.empty()
                              ? std::filesystem::read_symlink("/proc/self/exe").string()
                              : o.serve_binary;
  if (started) {
    std::filesystem::create_directories(out + "/logs");
    for (size_t k = 0; k <= C; ++k) {
      links[k].file = k < C ? fmt::format("{}/upstream_{}.safetensors", dir, k + 1)
                            : dir + "/combination.safetensors";
      MEL_CHECK(std::filesystem::exists(links[k].file), "mel simulate: {} is missing",
                links[k].file);
    }
    for (size_t k = 0; k <= C; ++k) {
      links[k].endpoint =
          start_server(o, bin, names[k], links[k].file,
                       fmt::format("{}/logs/server_{}.log", out, names[k]), links[k].child);
    }
  } else {
    std::set<std::string> seen_names, seen_addrs;
    size_t pos = 0;
    while (pos < o.servers.size()) {
      size_t end = o.servers.find(',', pos);
      if (end == std::string::npos) end = o.servers.size();
      const std::string item = o.servers.substr(pos, end - pos);
      pos = end + 1;
      const size_t eq = item.find('=');
      MEL_CHECK(eq != std::string::npos, "--servers: '{}' is not NAME=tcp://HOST:PORT", item);
      const std::string name = item.substr(0, eq), addr = item.substr(eq + 1);
      const auto it = std::find(names.begin(), names.end(), name);
      MEL_CHECK(it != names.end(), "--servers: '{}' names server '{}', expected 1..{} or C", item,
                name, M);
      std::string host, port;
      serving::split_tcp(addr, "--servers " + name, host, port);
      MEL_CHECK(port != "*", "--servers {}: give the server's port, not *", name);
      MEL_CHECK(seen_names.insert(name).second, "--servers: server {} is given twice", name);
      MEL_CHECK(seen_addrs.insert(addr).second,
                "--servers: address {} is given for two servers (each server listens on its own)",
                addr);
      links[static_cast<size_t>(it - names.begin())].endpoint = addr;
    }
    for (const auto& n : names)
      MEL_CHECK(seen_names.count(n), "--servers: no address for server {} (give 1..{} and C)", n,
                M);
  }

  // Hello: each server's identity, run and shapes must fit the others'.
  Socket beats(ctx, ZMQ_SUB);
  beats.subscribe_all();
  auto connect_link = [&](Link& l) {
    const Message h = hello(ctx, l, o.start_timeout_ms);
    l.info = h.header;
    MEL_CHECK(l.info.value("server", "") == l.name,
              "mel simulate: the server at {} is server '{}', expected server {}", l.endpoint,
              l.info.value("server", ""), l.name);
    MEL_CHECK(l.info.value("models", 0) == M,
              "mel simulate: server {} at {} serves an ensemble of {} models, expected {}", l.name,
              l.endpoint, l.info.value("models", 0), M);
    std::string host, port;
    serving::split_tcp(l.endpoint, "server " + l.name, host, port);
    beats.connect(fmt::format("tcp://{}:{}", host, l.info.value("heartbeat_port", 0)));
    l.beat_seen = false;
  };
  for (auto& l : links) connect_link(l);
  for (size_t k = 0; k < C; ++k) {
    const Json want = links[C].info["feature_shapes"][k];
    const Json got = links[k].info["feature_shapes"][k];
    MEL_CHECK(want == got,
              "mel simulate: mismatched feature shapes: upstream {} sends {} per sample, server C "
              "expects {} for it",
              k + 1, got.dump(), want.dump());
    MEL_CHECK(links[k].info["input"] == Json(image),
              "mel simulate: upstream {} takes inputs {}, the dataset's images are {}", k + 1,
              links[k].info["input"].dump(), Json(image).dump());
  }
  for (size_t k = 1; k <= C; ++k) {
    MEL_CHECK(links[k].info.value("run", "") == links[0].info.value("run", ""),
              "mel simulate: server {} ({}) serves run {} ({}), server 1 ({}) serves run {} ({}): "
              "the files come from different runs or exports",
              links[k].name, links[k].endpoint, links[k].info.value("run", ""),
              links[k].info.value("run_name", ""), links[0].endpoint,
              links[0].info.value("run", ""), links[0].info.value("run_name", ""));
  }
  // Heartbeats: every server must be heard once before the first request.
  std::vector<std::string> frames;
  auto drain_beats = [&] {
    while (beats.try_recv(frames)) {
      const Json b = Json::parse(frames.empty() ? std::string() : frames[0], nullptr, false);
      if (!b.is_object()) continue;
      const std::string name = b.value("server", "");
      for (auto& l : links) {
        if (l.name == name && b.value("run", "") == l.info.value("run", "")) {
          l.last_beat = Clock::now();
          l.beat_seen = true;
        }
      }
    }
  };
  auto await_beat = [&](Link& l) {
    const auto t0 = Clock::now();
    while (!l.beat_seen) {
      MEL_CHECK(ms_since(t0) < o.start_timeout_ms,
                "mel simulate: no heartbeat from server {} ({}) within {} ms", l.name, l.endpoint,
                o.start_timeout_ms);
      beats.wait(10);
      drain_beats();
    }
  };
  for (auto& l : links) await_beat(l);
  auto alive = [&](const Link& l) { return l.beat_seen && ms_since(l.last_beat) <= o.liveness_ms; };

  // Events and the phases they start.
  std::vector<std::string> state(C + 1, "up");
  struct Phase {
    int64_t first = 0, last = -1;
    std::vector<std::string> state;
    std::vector<std::string> events;
  };
  std::vector<Phase> phases(1);
  phases[0].state = state;
  auto control = [&](Link& l, const std::string& fault, int ms) {
    const auto f = serving::encode(
        Message{{{"type", "control"}, {"id", -2}, {"fault", fault}, {"ms", ms}}, {}});
    MEL_CHECK(l.dealer->send(f, true), "mel simulate: cannot reach server {} to inject '{}'",
              l.name, fault);
    const auto t0 = Clock::now();
    std::vector<std::string> r;
    Message m;
    std::string err;
    while (ms_since(t0) < o.start_timeout_ms) {
      if (!l.dealer->wait(50)) continue;
      while (l.dealer->try_recv(r)) {
        if (serving::decode(r, 0, m, err) && m.header.value("type", "") == "control") return;
        ++l.late_replies;
      }
    }
    fail("mel simulate: server {} did not acknowledge fault '{}' within {} ms", l.name, fault,
         o.start_timeout_ms);
  };
  auto apply = [&](const Event& e) {
    const size_t k =
        static_cast<size_t>(std::find(names.begin(), names.end(), e.server) - names.begin());
    Link& l = links[k];
    if (e.action == "kill") {
      MEL_CHECK(l.child.pid > 0, "--schedule {}: server {} is not running", e.text, e.server);
      end_child(l.child, SIGKILL);
      state[k] = "killed";
    } else if (e.action == "stop") {
      MEL_CHECK(l.child.pid > 0, "--schedule {}: server {} is not running", e.text, e.server);
      kill(l.child.pid, SIGSTOP);
      int status = 0;
      waitpid(l.child.pid, &status, WUNTRACED);
      l.child.stopped = true;
      state[k] = "stopped";
    } else if (e.action == "cont") {
      MEL_CHECK(l.child.pid > 0 && l.child.stopped, "--schedule {}: server {} is not stopped",
                e.text, e.server);
      kill(l.child.pid, SIGCONT);
      l.child.stopped = false;
      // Up again once a heartbeat sent after the pause arrives.
      drain_beats();
      l.beat_seen = false;
      await_beat(l);
      state[k] = "up";
    } else if (e.action == "restart") {
      end_child(l.child, SIGKILL);
      l.endpoint = start_server(o, bin, l.name, l.file,
                                fmt::format("{}/logs/server_{}.log", out, l.name), l.child);
      connect_link(l);
      await_beat(l);
      state[k] = "up";
    } else if (e.action == "heal") {
      control(l, "none", 0);
      state[k] = "up";
    } else {
      MEL_CHECK(state[k] == "up" || state[k].rfind("faulty", 0) == 0,
                "--schedule {}: server {} is {}, a fault needs it running", e.text, e.server,
                state[k]);
      control(l, e.action, e.ms);
      state[k] = e.action == "delay" ? fmt::format("faulty (delay {} ms)", e.ms)
                                     : fmt::format("faulty ({})", e.action);
    }
  };

  // The requests.
  std::vector<RequestRecord> reqs;
  std::vector<int64_t> answers;  // per sample: the class answered, -1 when the request failed
  std::map<std::string, int64_t> rules;
  size_t next_event = 0;
  const auto start = Clock::now();
  fmt::print("mel simulate: {} requests of {} samples to {} upstream servers and C{}\n", requests,
             o.batch, M, o.rate > 0 ? fmt::format(" at {} requests/s", o.rate) : "");
  std::fflush(stdout);
  for (int64_t r = 0; r < requests; ++r) {
    bool new_phase = false;
    while (next_event < events.size() && events[next_event].at == r) {
      if (!new_phase && r > 0) {
        phases.back().last = r - 1;
        phases.emplace_back();
        phases.back().first = r;
      }
      new_phase = true;
      apply(events[next_event]);
      phases.back().events.push_back(events[next_event].text);
      ++next_event;
    }
    if (new_phase) phases.back().state = state;
    // Open loop: request r is due at start + r / rate; its latency counts from then.
    Clock::time_point t0 = Clock::now();
    if (o.rate > 0) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(r) / o.rate));
      if (due > t0) std::this_thread::sleep_until(due);
      t0 = due;
    }
    drain_beats();
    RequestRecord rec;
    rec.id = r;
    rec.phase = static_cast<int64_t>(phases.size()) - 1;
    rec.status.assign(C + 1, "not asked");
    const int64_t first = (r * o.batch) % N;
    const int64_t n = std::min(o.batch, N - first);
    rec.samples = n;
    const Tensor x = ds.images.slice(0, first, first + n).contiguous();
    const Message ask{{{"type", "features"}, {"id", r}}, {{"x", x}}};
    const std::vector<std::string> ask_frames = serving::encode(ask);
    // Upstreams.
    std::vector<size_t> pending;
    for (size_t k = 0; k < C; ++k) {
      if (!alive(links[k])) {
        rec.status[k] = fmt::format("down (no heartbeat for {} ms)", o.liveness_ms);
        continue;
      }
      if (!links[k].dealer->send(ask_frames, true, &links[k].bytes_sent)) {
        rec.status[k] = "not connected";
        continue;
      }
      links[k].samples_sent += n;
      ++links[k].requests_sent;
      pending.push_back(k);
    }
    std::vector<Message> got(C + 1);
    auto collect = [&](std::vector<size_t> wait_for, const std::string& type) {
      const auto sent = Clock::now();
      while (!wait_for.empty()) {
        const double left = o.deadline_ms - ms_since(sent);
        if (left <= 0) break;
        std::vector<zmq_pollitem_t> items;
        for (size_t k : wait_for) items.push_back({links[k].dealer->get(), 0, ZMQ_POLLIN, 0});
        if (zmq_poll(items.data(), static_cast<int>(items.size()),
                     static_cast<long>(std::ceil(left))) <= 0)
          continue;
        for (size_t j = 0; j < items.size(); ++j) {
          if (!(items[j].revents & ZMQ_POLLIN)) continue;
          const size_t k = wait_for[j];
          std::vector<std::string> fr;
          while (links[k].dealer->try_recv(fr, &links[k].bytes_received)) {
            Message m;
            std::string err;
            if (!serving::decode(fr, 0, m, err)) {
              rec.status[k] = "bad reply: " + err;
            } else if (m.header.value("id", Json(-1)) != Json(r)) {
              ++links[k].late_replies;  // an answer to an earlier request, too late
              continue;
            } else if (m.header.value("type", "") == "error") {
              rec.status[k] = "error: " + m.header.value("message", std::string("?"));
            } else if (m.header.value("type", "") != type) {
              rec.status[k] = fmt::format("bad reply: type '{}', expected '{}'",
                                          m.header.value("type", ""), type);
            } else {
              rec.status[k] = "ok";
              got[k] = std::move(m);
            }
            wait_for.erase(std::find(wait_for.begin(), wait_for.end(), k));
            break;
          }
        }
      }
      for (size_t k : wait_for) rec.status[k] = fmt::format("no reply within {} ms", o.deadline_ms);
    };
    collect(pending, "features");
    std::vector<int> ok;
    for (size_t k = 0; k < C; ++k) {
      if (rec.status[k] != "ok") continue;
      std::string why =
          check_tensor(got[k], "exit_logits", n, {links[C].info.value("exit_classes", int64_t{0})});
      if (why.empty()) {
        const Json fs = links[C].info["feature_shapes"][k];
        why = check_tensor(got[k], "features", n, Shape(fs.begin(), fs.end()));
      }
      if (!why.empty()) {
        rec.status[k] = why;
        continue;
      }
      ok.push_back(static_cast<int>(k));
    }
    std::vector<int64_t> cls;
    if (ok.empty()) {
      std::string why;
      for (size_t k = 0; k < C; ++k)
        why += fmt::format("{}{}: {}", k ? "; " : "", names[k], rec.status[k]);
      rec.failure = "no upstream answered (" + why + ")";
    } else {
      // C combines what arrived, when it has a head for a subset of it.
      if (ok.size() >= 2 && serving::head_for(model->spec, ok) >= 0) {
        drain_beats();
        if (!alive(links[C])) {
          rec.status[C] = fmt::format("down (no heartbeat for {} ms)", o.liveness_ms);
        } else {
          Message pred{{{"type", "predict"}, {"id", r}, {"upstreams", Json::array()}}, {}};
          for (int k : ok) {
            pred.header["upstreams"].push_back(k + 1);
            pred.tensors.emplace_back(fmt::format("features_{}", k + 1),
                                      *got[static_cast<size_t>(k)].find("features"));
          }
          if (links[C].dealer->send(serving::encode(pred), true, &links[C].bytes_sent)) {
            links[C].samples_sent += n;
            ++links[C].requests_sent;
            collect({C}, "predictions");
            if (rec.status[C] == "ok") {
              const std::string why = check_tensor(
                  got[C], "logits", n, {links[C].info.value("num_classes", int64_t{0})});
              if (!why.empty()) rec.status[C] = why;
            }
            if (rec.status[C] == "ok") {
              rec.answered_by = got[C].header.value("head", "?");
              cls = argmax_rows(softmax_rows(*got[C].find("logits")), n,
                                got[C].find("logits")->size(1));
            }
          } else {
            rec.status[C] = "not connected";
          }
        }
      }
      if (rec.answered_by.empty()) {
        // The alive exits: one answers alone; several average their probabilities.
        const int64_t K = got[static_cast<size_t>(ok[0])].find("exit_logits")->size(1);
        std::vector<double> sum(static_cast<size_t>(n * K), 0.0);
        std::vector<int> sorted_ok = ok;
        for (int k : ok) {
          const std::vector<double> p =
              softmax_rows(*got[static_cast<size_t>(k)].find("exit_logits"));
          for (size_t j = 0; j < sum.size(); ++j) sum[j] += p[j];
        }
        cls = argmax_rows(sum, n, K);
        rec.answered_by =
            ok.size() == 1 ? std::to_string(ok[0] + 1) : method::exits_name(sorted_ok);
      }
      const bool head = rec.answered_by.find('+') != std::string::npos;
      for (int64_t j = 0; j < n; ++j) {
        const size_t s = static_cast<size_t>(first + j);
        rec.correct += cls[static_cast<size_t>(j)] == (head ? fine[s] : coarse[s]);
      }
    }
    rec.latency_ms = ms_since(t0);
    for (int64_t j = 0; j < n; ++j)
      answers.push_back(cls.empty() ? -1 : cls[static_cast<size_t>(j)]);
    for (size_t k = 0; k <= C; ++k)
      ++links[k].outcomes[rec.status[k].substr(0, rec.status[k].find(':'))];
    ++rules[rec.answered_by.empty() ? "failed" : rec.answered_by];
    reqs.push_back(std::move(rec));
  }
  phases.back().last = requests - 1;
  const double wall_s = ms_since(start) / 1000.0;

  // The report.
  Json j;
  j["source"] = o.source;
  j["servers_dir"] = dir;
  j["run"] = links[0].info.value("run", "");
  j["run_name"] = links[0].info.value("run_name", "");
  j["started_servers"] = started;
  j["options"] = {{"batch", o.batch},
                  {"rate", o.rate},
                  {"requests", requests},
                  {"deadline_ms", o.deadline_ms},
                  {"heartbeat_ms", o.heartbeat_ms},
                  {"liveness_ms", o.liveness_ms},
                  {"schedule", o.schedule},
                  {"test_samples", N}};
  int64_t answered = 0, failed = 0, samples = 0, correct = 0, answered_samples = 0;
  std::vector<double> lat;
  for (const auto& r : reqs) {
    (r.answered_by.empty() ? failed : answered) += 1;
    samples += r.samples;
    if (!r.answered_by.empty()) answered_samples += r.samples;
    correct += r.correct;
    lat.push_back(r.latency_ms);
  }
  auto lat_json = [](const std::vector<double>& v) {
    return Json{{"p50", percentile(v, 50)},
                {"p95", percentile(v, 95)},
                {"p99", percentile(v, 99)},
                {"max", v.empty() ? 0.0 : *std::max_element(v.begin(), v.end())}};
  };
  j["requests"] = {{"sent", requests},
                   {"answered", answered},
                   {"failed", failed},
                   {"lost", requests - answered - failed}};
  j["samples"] = samples;
  j["accuracy"] =
      answered_samples ? static_cast<double>(correct) / static_cast<double>(answered_samples) : 0.0;
  j["accuracy_all_samples"] =
      samples ? static_cast<double>(correct) / static_cast<double>(samples) : 0.0;
  j["latency_ms"] = lat_json(lat);
  j["wall_seconds"] = wall_s;
  j["answered_by"] = rules;
  Json ph = Json::array();
  for (size_t p = 0; p < phases.size(); ++p) {
    const Phase& P = phases[p];
    int64_t s = 0, c = 0, a = 0, f = 0, as = 0;
    std::map<std::string, int64_t> by;
    std::vector<double> pl;
    for (int64_t r = P.first; r <= P.last; ++r) {
      const auto& q = reqs[static_cast<size_t>(r)];
      s += q.samples;
      c += q.correct;
      (q.answered_by.empty() ? f : a) += 1;
      if (!q.answered_by.empty()) as += q.samples;
      ++by[q.answered_by.empty() ? "failed" : q.answered_by];
      pl.push_back(q.latency_ms);
    }
    Json st = Json::object();
    for (size_t k = 0; k <= C; ++k) st[names[k]] = P.state[k];
    ph.push_back({{"first_request", P.first},
                  {"last_request", P.last},
                  {"events", P.events},
                  {"servers", st},
                  {"samples", s},
                  {"answered", a},
                  {"failed", f},
                  {"correct", c},
                  {"accuracy", as ? static_cast<double>(c) / static_cast<double>(as) : 0.0},
                  {"answered_by", by},
                  {"latency_ms", lat_json(pl)}});
  }
  j["phases"] = ph;
  Json sv = Json::array();
  for (size_t k = 0; k <= C; ++k) {
    const Link& l = links[k];
    const double per = l.samples_sent ? 1.0 / static_cast<double>(l.samples_sent) : 0.0;
    sv.push_back({{"server", l.name},
                  {"endpoint", l.endpoint},
                  {"requests", l.requests_sent},
                  {"samples", l.samples_sent},
                  {"bytes_sent_to", l.bytes_sent},
                  {"bytes_received_from", l.bytes_received},
                  {"bytes_per_sample_to", static_cast<double>(l.bytes_sent) * per},
                  {"bytes_per_sample_from", static_cast<double>(l.bytes_received) * per},
                  {"late_replies", l.late_replies},
                  {"outcomes", l.outcomes}});
  }
  j["servers"] = sv;
  j["input_bytes_per_sample"] = image_bytes;

  // Table.
  std::string t = fmt::format(
      "mel simulate: {} ({} upstream servers and C), {} requests of {} "
      "samples, deadline {} ms, liveness {} ms\n\n",
      j["run_name"].get<std::string>(), M, requests, o.batch, o.deadline_ms, o.liveness_ms);
  t += fmt::format("{:<11} {:<28} {:>8} {:>9} {:<26} {:>8} {:>8} {:>8}\n", "requests", "servers",
                   "samples", "accuracy", "answered by", "p50 ms", "p95 ms", "p99 ms");
  for (const Json& p : ph) {
    std::string st, by;
    for (auto& [k, v] : p["servers"].items()) {
      if (v != "up") st += fmt::format("{}{} {}", st.empty() ? "" : ", ", k, v.get<std::string>());
    }
    for (auto& [k, v] : p["answered_by"].items())
      by += fmt::format("{}{} x{}", by.empty() ? "" : ", ", k, v.get<int64_t>());
    t += fmt::format(
        "{:<11} {:<28} {:>8} {:>8.2f}% {:<26} {:>8.1f} {:>8.1f} {:>8.1f}\n",
        fmt::format("{}-{}", p["first_request"].get<int64_t>(), p["last_request"].get<int64_t>()),
        st.empty() ? "all up" : st, p["samples"].get<int64_t>(),
        100.0 * p["accuracy"].get<double>(), by, p["latency_ms"]["p50"].get<double>(),
        p["latency_ms"]["p95"].get<double>(), p["latency_ms"]["p99"].get<double>());
  }
  t += fmt::format("\n{:<8} {:>9} {:>9} {:>14} {:>16} {:>6}  {}\n", "server", "requests", "samples",
                   "bytes/sample to", "bytes/sample from", "late", "outcomes");
  for (const Json& s : sv) {
    std::string oc;
    for (auto& [k, v] : s["outcomes"].items())
      if (k != "not asked")
        oc += fmt::format("{}{} x{}", oc.empty() ? "" : ", ", k, v.get<int64_t>());
    t +=
        fmt::format("{:<8} {:>9} {:>9} {:>14.0f} {:>16.0f} {:>6}  {}\n",
                    s["server"].get<std::string>(), s["requests"].get<int64_t>(),
                    s["samples"].get<int64_t>(), s["bytes_per_sample_to"].get<double>(),
                    s["bytes_per_sample_from"].get<double>(), s["late_replies"].get<int64_t>(), oc);
  }
  t += fmt::format(
      "\n{} requests: {} answered, {} failed, {} lost; accuracy {:.2f}% over answered "
      "samples; latency p50 {:.1f} / p95 {:.1f} / p99 {:.1f} ms; {:.1f} s\n",
      requests, answered, failed, requests - answered - failed, 100.0 * j["accuracy"].get<double>(),
      percentile(lat, 50), percentile(lat, 95), percentile(lat, 99), wall_s);

  // Files.
  std::string csv = "request,phase,samples,answered_by,correct,latency_ms,failure";
  for (const auto& n : names) csv += ",server_" + n;
  csv += "\n";
  auto quote = [](const std::string& s) {
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  };
  for (const auto& r : reqs) {
    csv += fmt::format("{},{},{},{},{},{:.3f},{}", r.id, r.phase, r.samples, quote(r.answered_by),
                       r.correct, r.latency_ms, quote(r.failure));
    for (const auto& s : r.status) csv += "," + quote(s);
    csv += "\n";
  }
  train::write_file_atomic(out + "/requests.csv", csv);
  train::write_file_atomic(
      out + "/answers.npy",
      data::npy_bytes(tensor_i64(answers, {static_cast<int64_t>(answers.size())})));
  train::write_file_atomic(out + "/simulation.json", j.dump(2) + "\n");
  train::write_file_atomic(out + "/simulation.txt", t);
  train::write_file_atomic(
      out + "/timeline.svg",
      timeline_svg(reqs, events, names,
                   fmt::format("{}: {} requests, schedule {}", j["run_name"].get<std::string>(),
                               requests, o.schedule.empty() ? "none" : o.schedule)));
  fmt::print("{}", t);
  fmt::print(
      "wrote simulation.json, simulation.txt, requests.csv, answers.npy and timeline.svg to "
      "{}\n",
      out);
  return j;
}

}  // namespace mel::app
