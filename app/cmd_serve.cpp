// `mel serve FILE`: one server of an exported ensemble (an upstream or the combination server C)
// answering requests over ZeroMQ until SIGTERM.
#include "app/commands.h"

namespace mel::app {

CLI::App* add_serve(CLI::App& app, CliOptions& o) {
  auto* s =
      app.add_subcommand("serve",
                         "run one server of an exported ensemble (upstream_<i>.safetensors or "
                         "combination.safetensors from mel export)");
  s->add_option("file", o.serve.file, "the server's file from mel export")->required();
  s->add_option("--bind", o.serve.bind, "tcp://HOST:PORT to listen on (port * picks a free one)")
      ->capture_default_str();
  s->add_option("--heartbeat-ms", o.serve.heartbeat_ms, "heartbeat interval in milliseconds")
      ->capture_default_str();
  s->add_option("--device", o.serve.device, "cpu or cuda[:N]")->capture_default_str();
  return s;
}

void run_serve(const CliOptions& o) {
  serving::serve(o.serve);
}

}  // namespace mel::app
