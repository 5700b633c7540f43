// The `mel` command line (train, eval, export, predict, serve, simulate, info): parsing with CLI11
// and dispatch to one file per subcommand; errors become a message on stderr and a non-zero exit
// status.
#pragma once

namespace mel::app {

int run_cli(int argc, char** argv);

}  // namespace mel::app
