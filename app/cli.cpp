#include "app/cli.h"

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <limits>

#include "app/commands.h"
#include "core/error.h"
#include "dist/mpi.h"

namespace mel::app {

void add_run_options(CLI::App* cmd, CliOptions& o) {
  cmd->add_option("--device", o.overrides.device, "cpu or cuda[:N]")->capture_default_str();
  cmd->add_option("--epochs", o.epochs, "number of epochs (overrides the config)");
  cmd->add_option("--batch", o.batch, "batch size (overrides the config)");
  cmd->add_option("--train-limit", o.train_limit, "train on the first N samples only");
  cmd->add_option("--test-limit", o.test_limit, "evaluate on the first N test samples only");
  cmd->add_option("--seed", o.seed, "random seed (overrides the config)");
  cmd->add_option("--data", o.overrides.data_dir, "dataset folder (overrides the config)");
  cmd->add_option("--out", o.overrides.out, "run folder (default runs/<config name>)");
  cmd->add_flag("!--no-progress", o.overrides.progress, "plain progress lines even on a terminal");
}

RunOverrides overrides_of(const CliOptions& o) {
  // Every number is checked here, not only where the config is read: a value the config would
  // also accept as "absent" (0 limits) is still a number the user gave.
  auto in_range = [](const char* name, const std::optional<int64_t>& v, int64_t lo, int64_t hi) {
    MEL_CHECK(!v || (*v >= lo && *v <= hi), "{} must be in [{}, {}], got {}", name, lo, hi,
              v ? *v : 0);
    return v;
  };
  RunOverrides ov = o.overrides;
  ov.epochs = in_range("--epochs", o.epochs, 1, kMaxEpochs);
  ov.batch_size = in_range("--batch", o.batch, 1, kMaxBatch);
  ov.train_limit = in_range("--train-limit", o.train_limit, 0, std::numeric_limits<int64_t>::max());
  ov.test_limit = in_range("--test-limit", o.test_limit, 0, std::numeric_limits<int64_t>::max());
  if (in_range("--seed", o.seed, 0, std::numeric_limits<int64_t>::max())) {
    ov.seed = static_cast<uint64_t>(*o.seed);
  }
  ov.stop_after = in_range("--stop-after", o.stop_after, 1, kMaxEpochs);
  return ov;
}

bool changes_config(const CliOptions& o) {
  return o.epochs || o.batch || o.train_limit || o.test_limit || o.seed ||
         !o.overrides.data_dir.empty();
}

int run_cli(int argc, char** argv) {
  CLI::App app{"mel: multi-level ensemble learning and the layers to build it"};
  app.require_subcommand(1);
  CliOptions o;
  CLI::App* train = add_train(app, o);
  CLI::App* info = add_info(app, o);
  CLI::App* eval = add_eval(app, o);
  CLI::App* exp = add_export(app, o);
  CLI::App* predict = add_predict(app, o);
  CLI::App* serve = add_serve(app, o);
  CLI::App* simulate = add_simulate(app, o);
  CLI::App* features = add_features(app, o);
  CLI::App* sample = add_sample(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*train) run_train(o);
    if (*eval) run_eval(o);
    if (*exp) run_export(o);
    if (*predict) run_predict(o);
    if (*serve) run_serve(o);
    if (*simulate) run_simulate(o);
    if (*info) run_info(o);
    if (*features) run_features(o);
    if (*sample) run_sample(o);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "mel: error: {}\n", e.what());
    std::fflush(stderr);
    dist::abort_job(1);  // a placed run under mpirun: end the other ranks too
    return 1;
  }
  return 0;
}

}  // namespace mel::app
