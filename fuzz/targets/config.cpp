// Fuzz target: a JSON config through the whole config builder, as `mel info CONFIG` does it
// (app/cmd_info.cpp): parse the text (size and nesting limits), read a single-model or an
// ensemble config, build the model, render its module tree and parameter counts.
//
// A clean mel::Error is the expected answer to a bad config; anything else (another exception,
// a sanitizer report, a hang) is a bug. Allocations above 128 MiB fail in the fuzzing build (the
// CPU allocator then throws mel::Error, as `mel info` does when memory runs out), so a config that
// asks for a legitimately huge model is not reported as a crash.
#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "app/ensemble_config.h"
#include "app/single.h"
#include "core/error.h"
#include "core/json_reader.h"

#ifdef MEL_FUZZING
extern "C" const char* __asan_default_options() {
  return "allocator_may_return_null=1:max_allocation_size_mb=128";
}
#endif

namespace {

// A folder that does not exist: an "original" model referenced relative to the config is not
// found (and an absolute one is read through the same size-limited reader).
const char* const kSource = "/nonexistent-mel-fuzz/config.json";

std::string info_text(mel::Json cfg) {
  using namespace mel::app;
  if (!is_mel_config(cfg)) {
    SingleConfig c = parse_single_config(std::move(cfg), kSource, RunOverrides{});
    auto model = build_model(c);
    return fmt::format("{}\n{}\ntotal parameters: {}\n", c.name, model->repr(true),
                       model->num_parameters());
  }
  MelConfig c = parse_mel_config(std::move(cfg), kSource, RunOverrides{});
  auto model = build_ensemble_model(c);
  std::string out = fmt::format("{}\n{}\n", c.name, model->repr(true));
  for (int i = 0; i < model->spec.M; ++i) {
    out += fmt::format("server {}: {} parameters\n", i + 1, model->upstream_parameters(i));
  }
  out += fmt::format("server C: {} parameters\ntotal parameters: {}\n", model->head_parameters(),
                     model->num_parameters());
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const std::string out = info_text(mel::parse_json_text(text, kSource));
    if (out.empty()) __builtin_trap();  // keeps the rendering from being optimised away
  } catch (const mel::Error&) {
  }
  return 0;
}
