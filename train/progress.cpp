#include "train/progress.h"

#include <fmt/format.h>

#include <cstdio>

#include "train/files.h"

namespace mel::train {

Progress::Progress(std::string title, int64_t total, bool terminal)
    : title_(std::move(title)),
      total_(total),
      terminal_(terminal),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

void Progress::update(int64_t done, int64_t samples, double loss, double accuracy) {
  const auto now = std::chrono::steady_clock::now();
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(samples) / elapsed : 0.0;
  const double eta = done > 0 ? elapsed / static_cast<double>(done) * (total_ - done) : -1.0;
  const std::string stats = fmt::format("loss {:.4f}  acc {:5.2f}%  {:.0f} samples/s  ETA {}", loss,
                                        100.0 * accuracy, rate, format_duration(eta));
  if (terminal_) {
    // Redraw at most ~10 times a second, and always on the last step.
    if (done < total_ && std::chrono::duration<double>(now - last_draw_).count() < 0.1) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done / total_) : kWidth;
    fmt::print("\r{} [{}{}] {}/{}  {}\x1b[K", title_, std::string(filled, '#'),
               std::string(kWidth - filled, '.'), done, total_, stats);
    std::fflush(stdout);
    return;
  }
  const int64_t tenth = total_ > 0 ? done * 10 / total_ : 10;
  if (tenth == last_printed_ || (tenth == 0 && done != 1)) return;
  last_printed_ = tenth;
  fmt::print("{} {}/{}  {}\n", title_, done, total_, stats);
  std::fflush(stdout);
}

void Progress::finish() {
  if (terminal_) fmt::print("\n");
  std::fflush(stdout);
}

}  // namespace mel::train
