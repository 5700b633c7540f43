// Fuzz target: the serving wire format (app/serving decode). The input is a multipart message
// whose frames are separated by the 9 bytes "\n@@FRAME\n" (frame 0: the JSON header, then one
// frame per tensor). decode must answer every message with true or false and a reason, never
// throw (the server calls it outside any try); what it accepts must encode and decode again to
// the same tensors, and the fields the server reads next ("type", "id") must be readable.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "app/serving.h"

namespace {

const std::string kSeparator = "\n@@FRAME\n";

std::vector<std::string> split_frames(const std::string& in) {
  std::vector<std::string> frames;
  size_t at = 0;
  while (true) {
    const size_t next = in.find(kSeparator, at);
    if (next == std::string::npos) {
      frames.push_back(in.substr(at));
      return frames;
    }
    frames.push_back(in.substr(at, next - at));
    at = next + kSeparator.size();
  }
}

bool same(const mel::app::serving::Message& a, const mel::app::serving::Message& b) {
  if (a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const mel::Tensor& x = a.tensors[i].second;
    const mel::Tensor& y = b.tensors[i].second;
    if (a.tensors[i].first != b.tensors[i].first || x.dtype() != y.dtype() ||
        x.shape() != y.shape() || x.nbytes() != y.nbytes() ||
        (x.nbytes() > 0 && std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) != 0)) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mel::app::serving;
  const std::vector<std::string> frames =
      split_frames(std::string(reinterpret_cast<const char*>(data), size));
  Message m;
  std::string error;
  if (!decode(frames, 0, m, error)) {
    if (error.empty()) __builtin_trap();  // a refusal always says why
    return 0;
  }
  // What the server loop and the client read from every decoded message.
  const std::string type = m.header.value("type", std::string());
  const mel::Json id = m.header.contains("id") ? m.header["id"] : mel::Json(nullptr);
  (void)id;
  Message again;
  if (!decode(encode(m), 0, again, error) || !same(m, again) ||
      again.header.value("type", std::string()) != type) {
    __builtin_trap();
  }
  return 0;
}
