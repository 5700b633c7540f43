// `mel simulate`: the M+1 servers of an exported ensemble as separate `mel serve` processes on
// loopback (or servers already running at given addresses), a client streaming the test set to
// them at a request rate and batch size, and failures injected on a schedule. Heartbeats and
// deadlines decide who is alive; the client answers each request from what arrived in time:
// C's head over the upstreams that answered, else their exits' averaged probabilities, else the
// one exit that answered; a request no upstream answered fails with a reason. Nothing is lost:
// every request is answered or failed.
#pragma once
#include <cstdint>
#include <string>

#include "core/json_reader.h"

namespace mel::app {

struct SimulateOptions {
  std::string source;            // a run folder, a checkpoint, or a folder of `mel export`
  std::string out;               // output folder (default: simulation)
  std::string servers;           // "1=tcp://HOST:PORT,...,C=tcp://HOST:PORT": connect, start none
  int64_t batch = 64;            // samples per request
  double rate = 0;               // requests per second (0: each request once the last is answered)
  int64_t requests = -1;         // default: the test samples in batches (the set repeats if more)
  int deadline_ms = 500;         // each server's reply must arrive within this of the request
  int heartbeat_ms = 10;         // the servers' heartbeat interval
  int liveness_ms = 100;         // a server silent this long is down and not asked
  int start_timeout_ms = 60000;  // a server must be ready (and answer hello) within this
  std::string schedule;          // "kill:2@40,restart:2@80,stop:1@10,cont:1@20,delay:2=300@5,..."
  std::string data_dir;          // dataset folder (overrides the stored config)
  int64_t test_limit = -1;       // the first N test samples
  std::string serve_binary;      // the `mel` that runs the servers (default: this program)
  int server_threads = 1;        // OMP_NUM_THREADS of each started server
  std::string device = "cpu";    // the servers' device
};

// Runs the simulation, writes simulation.json, simulation.txt, timeline.svg, requests.csv and
// answers.npy to the output folder, prints the table, and returns simulation.json's content.
Json simulate(const SimulateOptions& o);

}  // namespace mel::app
