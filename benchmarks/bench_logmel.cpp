// CPU benchmarks of the spoken-word front end: log-mel features of one-second 16 kHz clips (the
// speech configs' options: 40 mels, 25 ms windows every 10 ms, n_fft 512), in clips per second on
// one thread, and a training batch of masked, normalised feature maps through the DataLoader.
// The features are checked against the direct-DFT reference before timing.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/mel.h"
#include "data/loader.h"
#include "data/logmel.h"

namespace {

using mel::data::LogMel;
using mel::data::LogMelOptions;

std::vector<float> clip(int64_t n, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(n));
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double noise = static_cast<double>(s >> 11) / 9007199254740992.0 - 0.5;
    x[static_cast<size_t>(i)] =
        static_cast<float>(0.3 * std::sin(0.07 * static_cast<double>(i)) + 0.05 * noise);
  }
  return x;
}

void check(const LogMel& lm, const std::vector<float>& x) {
  const LogMelOptions& o = lm.options();
  std::vector<float> got(static_cast<size_t>(o.n_mels * lm.frames(static_cast<int64_t>(x.size()))));
  lm.compute(x.data(), static_cast<int64_t>(x.size()), got.data());
  const std::vector<double> want =
      mel::data::log_mel_reference(o, std::vector<double>(x.begin(), x.end()));
  for (size_t k = 0; k < got.size(); k += 17) {
    if (std::abs(got[k] - want[k]) > 1e-4 * (1 + std::abs(want[k]))) {
      std::fprintf(stderr, "bench_logmel: feature %zu is %.9g, the reference %.9g\n", k,
                   static_cast<double>(got[k]), want[k]);
      std::abort();
    }
  }
}

void BM_LogMelClip(benchmark::State& state) {
  const LogMel lm(LogMelOptions{});
  const std::vector<float> x = clip(16000, 1);
  check(lm, x);
  std::vector<float> out(static_cast<size_t>(40 * lm.frames(16000)));
  for (auto _ : state) {
    lm.compute(x.data(), 16000, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["clips/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LogMelClip)->Unit(benchmark::kMicrosecond);

// One batch of 128 feature maps [1, 40, 98]: normalisation and SpecAugment masks as in training.
void BM_FeatureBatch(benchmark::State& state) {
  mel::data::ImageDataset ds;
  ds.name = "features";
  mel::Generator gen(3);
  ds.images = mel::randn({1024, 1, 40, 98}, gen, mel::DType::f32);
  ds.labels = mel::zeros({1024}, mel::DType::i64);
  ds.num_classes = 12;
  mel::data::LoaderOptions o;
  o.batch_size = 128;
  o.prefetch = false;
  o.mean = {-5.2f};
  o.std = {5.0f};
  if (state.range(0)) o.spec_augment = {2, 6, 2, 12};
  mel::data::DataLoader loader(ds, o);
  mel::data::Batch b;
  int64_t epoch = 0;
  for (auto _ : state) {
    if (!loader.next(b)) {
      loader.start_epoch(++epoch);
      loader.next(b);
    }
    benchmark::DoNotOptimize(b.x.data<float>());
  }
  state.counters["samples/s"] = benchmark::Counter(128.0 * static_cast<double>(state.iterations()),
                                                   benchmark::Counter::kIsRate);
  state.SetLabel(state.range(0) ? "normalise + SpecAugment" : "normalise");
}
BENCHMARK(BM_FeatureBatch)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
