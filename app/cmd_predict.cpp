// `mel predict RUN_DIR_OR_CHECKPOINT`: every predictor's class and probabilities (optionally its
// logits) for the test split or for images in a .npy file, written as .npy files or one CSV.
// An ensemble's predictors are its exits and heads ("exit_1", "head_1+2"); a single model's is
// "model".
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "app/commands.h"
#include "app/ensemble_run.h"
#include "app/single.h"
#include "core/autograd.h"
#include "core/factory.h"
#include "core/ops_index.h"
#include "core/ops_nn.h"
#include "core/ops_reduce.h"
#include "data/loader.h"
#include "data/npy.h"
#include "data/speech.h"
#include "train/checkpoint.h"
#include "train/device.h"
#include "train/files.h"

namespace mel::app {
namespace {

bool is_npy(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0;
}

// The images to predict: the test split, or the .npy file's u8 pixels [N, C, H, W] (or [N, H, W]
// for one channel) as a dataset without labels; for spoken words f32 features in a .npy, or WAV
// clips (a file or a folder) turned into features with the run's front end.
data::ImageDataset source_images(const CliOptions& o, const DataConfig& dc, const Shape& input,
                                 bool* labelled, std::vector<std::string>* files) {
  if (o.input.empty()) {
    *labelled = true;
    return load_split(dc, data::Split::test);
  }
  *labelled = false;
  if (dc.dataset == data::kSpokenWordsName && !is_npy(o.input)) {
    // Audio: one clip file, or a folder of them (every .wav in name order).
    std::vector<std::string> paths;
    if (std::filesystem::is_directory(o.input)) {
      for (const auto& e : std::filesystem::directory_iterator(o.input)) {
        if (e.is_regular_file() && e.path().extension() == ".wav") {
          paths.push_back(e.path().string());
        }
      }
      std::sort(paths.begin(), paths.end());
      MEL_CHECK(!paths.empty(), "{}: no .wav files in this folder", o.input);
    } else {
      paths.push_back(o.input);
    }
    data::ImageDataset ds;
    ds.name = o.input;
    ds.images = data::clip_features(paths, dc.speech);
    ds.labels = zeros({ds.images.size(0)}, DType::i64);
    ds.num_classes = dc.num_classes();
    *files = paths;  // in sample order: predictions.json lists them
    MEL_CHECK(ds.images.shape() == (Shape{ds.size(), input[0], input[1], input[2]}),
              "{}: features of shape {}, but the model takes [N, {}]", o.input,
              shape_str(ds.images.shape()), fmt::join(input, ", "));
    return ds;
  }
  Tensor x = data::load_npy(o.input);
  if (dc.dataset == data::kSpokenWordsName) {
    MEL_CHECK(x.dtype() == DType::f32,
              "{}: the features are {}, expected f32 log-mel features (as `mel features` writes "
              "them; normalisation is the config's)",
              o.input, dtype_name(x.dtype()));
  } else {
    MEL_CHECK(x.dtype() == DType::u8,
              "{}: the images are {}, expected u8 pixels (0..255, as the dataset stores them; "
              "normalisation is the config's)",
              o.input, dtype_name(x.dtype()));
  }
  if (x.dim() == 3 && input.size() == 3 && input[0] == 1) x = x.unsqueeze(1);
  Shape want = input;
  want.insert(want.begin(), x.dim() > 0 ? x.size(0) : 0);
  MEL_CHECK(x.shape() == want, "{}: images of shape {}, expected [N, {}] for this model", o.input,
            shape_str(x.shape()), fmt::join(input, ", "));
  data::ImageDataset ds;
  ds.name = o.input;
  ds.images = x.contiguous();
  ds.labels = zeros({x.size(0)}, DType::i64);
  ds.num_classes = dc.num_classes();
  return ds;
}

// The per-sample input shape of the config's model ("input" of its model or first upstream).
Shape input_shape(const Json& model) {
  const Json& in = model.at("input");
  return Shape(in.begin(), in.end());
}

// Collects every batch's outputs per predictor and writes them.
struct Collected {
  std::vector<std::string> names;  // file-name prefixes
  std::vector<std::vector<Tensor>> logits;
  std::vector<Tensor> labels, coarse;

  void add(const std::vector<Tensor>& out, const data::Batch& b) {
    if (logits.empty()) logits.resize(out.size());
    for (size_t k = 0; k < out.size(); ++k) logits[k].push_back(out[k].to(Device::cpu()));
    labels.push_back(b.y);
    if (b.y_coarse.defined()) coarse.push_back(b.y_coarse);
  }
};

void write(const std::string& path, const Tensor& t) {
  train::write_file_atomic(path, data::npy_bytes(t));
}

void write_outputs(const CliOptions& o, const Collected& c, bool labelled, const std::string& out,
                   const std::string& source, const std::vector<std::string>& inputs) {
  std::filesystem::create_directories(out);
  const int64_t P = static_cast<int64_t>(c.names.size());
  std::vector<Tensor> logits, probs, classes;
  for (int64_t k = 0; k < P; ++k) {
    logits.push_back(concat(c.logits[static_cast<size_t>(k)], 0).contiguous());
    probs.push_back(softmax(logits.back(), 1).contiguous());
    classes.push_back(argmax(logits.back(), 1).contiguous());
  }
  const int64_t n = P > 0 ? logits[0].size(0) : 0;
  const Tensor labels = labelled ? concat(c.labels, 0) : Tensor();
  const Tensor coarse = labelled && !c.coarse.empty() ? concat(c.coarse, 0) : Tensor();
  Json files = Json::array();
  if (o.format == "npy") {
    for (int64_t k = 0; k < P; ++k) {
      const std::string& name = c.names[static_cast<size_t>(k)];
      write(out + "/" + name + ".probabilities.npy", probs[static_cast<size_t>(k)]);
      files.push_back(name + ".probabilities.npy");
      if (o.logits) {
        write(out + "/" + name + ".logits.npy", logits[static_cast<size_t>(k)]);
        files.push_back(name + ".logits.npy");
      }
    }
    write(out + "/classes.npy", stack(classes, 1).contiguous());
    files.push_back("classes.npy");
    if (labels.defined()) {
      write(out + "/labels.npy", labels);
      files.push_back("labels.npy");
    }
    if (coarse.defined()) {
      write(out + "/coarse_labels.npy", coarse);
      files.push_back("coarse_labels.npy");
    }
  } else {
    std::string csv = "sample";
    if (labels.defined()) csv += ",label";
    if (coarse.defined()) csv += ",coarse_label";
    std::vector<std::vector<double>> pv, lv, cv;
    for (int64_t k = 0; k < P; ++k) {
      const std::string& name = c.names[static_cast<size_t>(k)];
      csv += fmt::format(",{}.class", name);
      for (int64_t j = 0; j < probs[static_cast<size_t>(k)].size(1); ++j)
        csv += fmt::format(",{}.p{}", name, j);
      if (o.logits) {
        for (int64_t j = 0; j < probs[static_cast<size_t>(k)].size(1); ++j)
          csv += fmt::format(",{}.logit{}", name, j);
      }
      pv.push_back(probs[static_cast<size_t>(k)].to(DType::f64).to_vector());
      lv.push_back(logits[static_cast<size_t>(k)].to(DType::f64).to_vector());
      cv.push_back(classes[static_cast<size_t>(k)].to_vector());
    }
    csv += "\n";
    const std::vector<double> lab = labels.defined() ? labels.to_vector() : std::vector<double>{};
    const std::vector<double> cl = coarse.defined() ? coarse.to_vector() : std::vector<double>{};
    for (int64_t i = 0; i < n; ++i) {
      csv += std::to_string(i);
      if (!lab.empty()) csv += fmt::format(",{}", lab[static_cast<size_t>(i)]);
      if (!cl.empty()) csv += fmt::format(",{}", cl[static_cast<size_t>(i)]);
      for (int64_t k = 0; k < P; ++k) {
        const int64_t K = probs[static_cast<size_t>(k)].size(1);
        csv += fmt::format(",{}", cv[static_cast<size_t>(k)][static_cast<size_t>(i)]);
        for (int64_t j = 0; j < K; ++j)
          csv += fmt::format(",{:.9g}", pv[static_cast<size_t>(k)][static_cast<size_t>(i * K + j)]);
        if (o.logits) {
          for (int64_t j = 0; j < K; ++j)
            csv +=
                fmt::format(",{:.9g}", lv[static_cast<size_t>(k)][static_cast<size_t>(i * K + j)]);
        }
      }
      csv += "\n";
    }
    train::write_file_atomic(out + "/predictions.csv", csv);
    files.push_back("predictions.csv");
  }
  Json meta = {{"source", source}, {"samples", n}, {"predictors", c.names}, {"files", files}};
  if (!inputs.empty()) meta["inputs"] = inputs;
  train::write_file_atomic(out + "/predictions.json", meta.dump(2) + "\n");
  fmt::print("{} predictions of {} predictor(s) from {} in {}\n", n, P, source, out);
}

// Runs `forward` over every batch of the images and writes the outputs.
void predict_all(const CliOptions& o, const DataConfig& dc, int64_t batch, int64_t limit,
                 const Shape& input, std::vector<std::string> names,
                 const std::function<std::vector<Tensor>(const Tensor&)>& forward,
                 const std::string& out) {
  bool labelled = false;
  std::vector<std::string> files;
  const data::ImageDataset ds = source_images(o, dc, input, &labelled, &files);
  data::DataLoader loader(ds, loader_options(dc, batch, 0, false, limit));
  Collected c;
  c.names = std::move(names);
  autograd::NoGradGuard ng;
  loader.start_epoch(0);
  data::Batch b;
  while (loader.next(b)) c.add(forward(b.x), b);
  const std::string source =
      o.input.empty() ? fmt::format("the {} test split", dc.dataset) : o.input;
  MEL_CHECK(!c.logits.empty(), "mel predict: no samples to predict in {}", source);
  write_outputs(o, c, labelled, out, source, files);
}

}  // namespace

CLI::App* add_predict(CLI::App& app, CliOptions& o) {
  auto* p = app.add_subcommand(
      "predict", "every exit's and head's predictions for the test split or a .npy of images");
  p->add_option("run", o.config, "run folder or model .safetensors file")->required();
  p->add_option("--input", o.input,
                "a .npy of u8 images [N, C, H, W]; spoken words: a .npy of f32 features, or WAV "
                "clips (a file or a folder) (default: the test split)");
  p->add_option("--out", o.out, "folder for the predictions (default: predictions)");
  p->add_option("--format", o.format, "npy (one file per predictor) or csv (one file)")
      ->check(CLI::IsMember({"npy", "csv"}))
      ->capture_default_str();
  p->add_flag("--logits", o.logits, "write the logits too");
  p->add_option("--device", o.overrides.device, "cpu or cuda[:N]")->capture_default_str();
  p->add_option("--data", o.overrides.data_dir, "dataset folder (overrides the stored config)");
  p->add_option("--test-limit", o.test_limit, "the first N samples only");
  return p;
}

void run_predict(const CliOptions& o) {
  const RunOverrides ov = overrides_of(o);
  const std::string out = o.out.empty() ? "predictions" : o.out;
  const Device device = train::run_device(ov.device, "mel predict");
  const train::Checkpoint ckpt = train::read_checkpoint(o.config);
  Json cfg = Json::parse(ckpt.info.config_json, nullptr, false);
  MEL_CHECK(!cfg.is_discarded(), "{}: the stored config is not valid JSON", ckpt.file);
  const std::string source = ckpt.file + " (stored config)";
  if (is_mel_config(cfg)) {
    const MelConfig c = parse_mel_config(std::move(cfg), source, ov);
    auto model = build_ensemble_model(c);
    train::load_model_checkpoint(ckpt, *model);
    model->to(device);
    model->eval();
    std::vector<std::string> names;
    for (const std::string& n : model->predictor_names()) {
      names.push_back((n.find('+') == std::string::npos ? "exit_" : "head_") + n);
    }
    predict_all(
        o, c.data, c.train.eval_batch_size, c.train.test_limit,
        input_shape(c.json["ensemble"]["upstream"].is_array() ? c.json["ensemble"]["upstream"][0]
                                                              : c.json["ensemble"]["upstream"]),
        names, [&](const Tensor& x) { return model->forward_all(x.to(device)); }, out);
  } else {
    const SingleConfig c = parse_single_config(std::move(cfg), source, ov);
    auto model = build_model(c);
    train::load_model_checkpoint(ckpt, *model);
    model->to(device);
    model->eval();
    predict_all(
        o, c.data, c.train.eval_batch_size, c.train.test_limit, input_shape(c.json["model"]),
        {"model"},
        [&](const Tensor& x) { return std::vector<Tensor>{model->forward(x.to(device))}; }, out);
  }
}

}  // namespace mel::app
