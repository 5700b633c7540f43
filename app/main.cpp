// The `mel` command: train, inspect and evaluate models described by JSON configs.
#include "app/cli.h"

int main(int argc, char** argv) {
  return mel::app::run_cli(argc, argv);
}
