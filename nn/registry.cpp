#include "nn/registry.h"

#include <fmt/format.h>

#include <deque>
#include <mutex>
#include <new>

namespace mel::nn {

std::vector<LayerType> builtin_layer_types();  // nn/builtin_layers.cpp

namespace {

struct Registry {
  std::mutex mutex;
  std::deque<LayerType> types;  // stable references for layer_type()
};

// Created on first use with the built-in types, so that they come first even when a static
// registration elsewhere runs before anything else; never destroyed (registrations may run or be
// read during static destruction).
Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    for (LayerType& t : builtin_layer_types()) reg->types.push_back(std::move(t));
    return reg;
  }();
  return *r;
}

const LayerType* find(Registry& r, const std::string& name) {
  for (const LayerType& t : r.types) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

}  // namespace

void require_dims(const Shape& shape, size_t dims, const std::string& expected,
                  const std::string& hint) {
  if (shape.size() != dims) throw ShapeError(expected, hint);
}

void register_layer(LayerType type) {
  MEL_CHECK(!type.name.empty(), "register_layer: a layer type needs a name");
  MEL_CHECK(static_cast<bool>(type.make), "register_layer: layer type '{}' has no factory",
            type.name);
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  MEL_CHECK(find(r, type.name) == nullptr, "register_layer: layer type '{}' is already registered",
            type.name);
  r.types.push_back(std::move(type));
}

bool has_layer_type(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return find(r, name) != nullptr;
}

const LayerType& layer_type(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (const LayerType* t = find(r, name)) return *t;
  std::vector<std::string> names;
  for (const LayerType& t : r.types) names.push_back(t.name);
  const std::string close = closest_match(name, names);
  fail("unknown layer type '{}' ({}registered: {})", name,
       close.empty() ? "" : fmt::format("did you mean '{}'? ", close), fmt::join(names, ", "));
}

std::vector<std::string> layer_types() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const LayerType& t : r.types) names.push_back(t.name);
  return names;
}

namespace {

// One entry of a layer list: its type's factory and shape rule, with errors located at the entry.
std::shared_ptr<Module> build_entry(const JsonReader& r, size_t index, Shape& shape) {
  const std::string type = r.get_string("type");
  const LayerType* lt = nullptr;
  try {
    lt = &layer_type(type);
  } catch (const Error& e) {
    r.error("type", e.what());
  }
  try {
    std::shared_ptr<Module> m = lt->make(r, shape);
    Shape out = lt->shape ? lt->shape(*m, shape) : shape;
    r.finish();
    shape = std::move(out);
    return m;
  } catch (const ShapeError& e) {
    r.error("type",
            fmt::format("layer {} ({}) needs {}, but the shape reaching it is {}{}", index, type,
                        e.expected, shape_str(shape), e.hint.empty() ? "" : " (" + e.hint + ")"));
  } catch (const std::bad_alloc&) {
    r.error("type", fmt::format("out of memory building layer {} ({}) for input {}", index, type,
                                shape_str(shape)));
  } catch (const Error& e) {
    // Allocating the layer's parameters failed: say which layer asked.
    const std::string what = e.what();
    if (what.find("out of memory") == std::string::npos && what.find("2^62") == std::string::npos)
      throw;
    r.error("type", fmt::format("layer {} ({}) for input {}: {}", index, type, shape_str(shape),
                                what));
  }
}

}  // namespace

std::shared_ptr<Sequential> build_layers(const JsonReader& reader, const std::string& key,
                                         Shape& shape) {
  auto seq = std::make_shared<Sequential>();
  const std::vector<JsonReader> entries = reader.objects(key);
  for (size_t i = 0; i < entries.size(); ++i) {
    std::shared_ptr<Module> m = build_entry(entries[i], i, shape);
    const LayerType& lt = layer_type(entries[i].get_string("type"));
    if (lt.fuse && seq->size() > 0) lt.fuse(*(*seq)[seq->size() - 1], *m);
    seq->push_back(std::move(m));
  }
  return seq;
}

}  // namespace mel::nn
