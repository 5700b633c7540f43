// Training progress: a redrawn bar with loss, accuracy, samples/s and ETA on a terminal, and
// plain lines (about ten per epoch) when the output is a file or a pipe.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace mel::train {

class Progress {
 public:
  Progress(std::string title, int64_t total_steps, bool terminal);
  // After `done` steps covering `samples` samples in this epoch.
  void update(int64_t done, int64_t samples, double loss, double accuracy);
  void finish();  // ends the bar's line

 private:
  std::string title_;
  int64_t total_;
  bool terminal_;
  int64_t last_printed_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mel::train
