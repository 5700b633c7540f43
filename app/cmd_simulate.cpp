// `mel simulate RUN_OR_EXPORT_DIR`: the ensemble's servers as separate processes (or at given
// addresses), a client streaming the test set, failures injected on a schedule.
#include "app/commands.h"

namespace mel::app {

CLI::App* add_simulate(CLI::App& app, CliOptions& o) {
  SimulateOptions& s = o.simulate;
  auto* c = app.add_subcommand(
      "simulate", "serve an ensemble as M+1 processes, stream the test set, inject failures");
  // An option given twice takes the last value (scripts append to a default command line).
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  c->add_option("source", s.source, "run folder, checkpoint, or folder written by mel export")
      ->required();
  c->add_option("--out", s.out, "output folder (default: simulation)");
  c->add_option("--servers", s.servers,
                "connect to running servers instead: 1=tcp://HOST:PORT,...,C=tcp://HOST:PORT");
  c->add_option("--batch", s.batch, "samples per request")->capture_default_str();
  c->add_option("--rate", s.rate, "requests per second (0: back to back)")->capture_default_str();
  c->add_option("--requests", s.requests,
                "number of requests (default: the test set once; it repeats if more)");
  c->add_option("--deadline-ms", s.deadline_ms, "how long the client waits for each server")
      ->capture_default_str();
  c->add_option("--heartbeat-ms", s.heartbeat_ms, "the servers' heartbeat interval")
      ->capture_default_str();
  c->add_option("--liveness-ms", s.liveness_ms,
                "a server without a heartbeat for this long is down and not asked")
      ->capture_default_str();
  c->add_option("--start-timeout-ms", s.start_timeout_ms,
                "how long a server may take to start and answer hello")
      ->capture_default_str();
  c->add_option("--schedule", s.schedule,
                "failures: ACTION:SERVER@REQUEST,... with ACTION kill, stop, cont, restart, "
                "delay (delay:2=300@5), drop, garbage, nan, heal");
  c->add_option("--data", s.data_dir, "dataset folder (overrides the stored config)");
  c->add_option("--test-limit", s.test_limit, "the first N test samples only");
  c->add_option("--serve-binary", s.serve_binary, "the mel program that runs the servers");
  c->add_option("--server-threads", s.server_threads, "CPU threads per started server")
      ->capture_default_str();
  c->add_option("--device", s.device, "the started servers' device: cpu or cuda[:N]")
      ->capture_default_str();
  return c;
}

void run_simulate(const CliOptions& o) {
  simulate(o.simulate);
}

}  // namespace mel::app
