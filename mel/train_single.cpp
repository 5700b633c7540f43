#include "mel/train_single.h"

#include <fmt/format.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "core/cuda_context.h"
#include "core/factory.h"
#include "core/ops_elementwise.h"
#include "core/ops_nn.h"
#include "core/ops_reduce.h"
#include "kernels/cpu/gemm.h"
#include "mel/checkpoint.h"
#include "mel/files.h"
#include "mel/progress.h"

namespace mel::app {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  Tensor pred = argmax(logits.detach(), 1).to(Device::cpu());
  const int64_t* p = pred.data<int64_t>();
  const int64_t* y = labels.data<int64_t>();
  int64_t c = 0;
  for (int64_t i = 0; i < labels.numel(); ++i) c += p[i] == y[i];
  return c;
}

Device module_device(const nn::Module& m) {
  std::vector<Tensor> ps = m.parameters();
  return ps.empty() ? Device::cpu() : ps.front().device();
}

std::string compute_description(Device d) {
  if (d.is_cuda()) {
    std::string name;
    MEL_CUDA_ONLY({
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, d.index) == cudaSuccess) name = p.name;
    });
    return fmt::format("{} {}", d.str(), name);
  }
  return fmt::format("cpu, {} threads, GEMM: {}", omp_get_max_threads(),
                     kernels::cpu::gemm_backend());
}

data::LoaderOptions loader_options(const DataConfig& dc, int64_t batch, uint64_t seed, bool train,
                                   int64_t limit) {
  data::LoaderOptions o;
  o.batch_size = batch;
  o.shuffle = train;
  o.drop_last = false;
  o.seed = seed;
  o.limit = limit;
  o.mean = dc.mean;
  o.std = dc.std;
  o.crop_padding = train ? dc.crop_padding : 0;
  o.hflip = train && dc.hflip;
  o.prefetch = true;
  return o;
}

void apply_overrides(const RunOverrides& ov, TrainConfig& t, DataConfig& data, Json& json) {
  if (ov.epochs) t.epochs = *ov.epochs;
  if (ov.batch_size) t.batch_size = *ov.batch_size;
  if (ov.train_limit) t.train_limit = *ov.train_limit;
  if (ov.test_limit) t.test_limit = *ov.test_limit;
  if (ov.seed) t.seed = *ov.seed;
  if (!ov.data_dir.empty()) data.dir = ov.data_dir;
  MEL_CHECK(t.epochs >= 1, "--epochs must be >= 1, got {}", t.epochs);
  MEL_CHECK(t.batch_size >= 1, "--batch must be >= 1, got {}", t.batch_size);
  MEL_CHECK(t.train_limit >= 0 && t.test_limit >= 0, "--train-limit / --test-limit must be >= 0");
  // Recorded in the config stored with the run, so eval and resume see what was trained.
  Json& tj = json["train"];
  tj["epochs"] = t.epochs;
  tj["batch_size"] = t.batch_size;
  tj["seed"] = t.seed;
  if (t.train_limit) tj["train_limit"] = t.train_limit;
  if (t.test_limit) tj["test_limit"] = t.test_limit;
  if (!data.dir.empty()) json["data"]["dir"] = data.dir;
}

SingleConfig load_single_config(const std::string& path, const RunOverrides& ov) {
  return parse_single_config(read_json_file(path), path, ov);
}

SingleConfig parse_single_config(Json json, const std::string& path, const RunOverrides& ov) {
  SingleConfig c;
  c.path = path;
  c.json = std::move(json);
  JsonReader top(c.json, path, "");
  c.name = top.get_string("name", std::filesystem::path(path).stem().string());
  const std::string kind = top.get_string("kind", "single");
  if (kind != "single") {
    top.error("kind", fmt::format("this build trains kind 'single' only, got '{}'", kind));
  }
  top.allow({"description"});
  c.data = read_data_config(top.has("data") ? top.object("data")
                                            : JsonReader(Json::object(), path, "data"));
  c.train = read_train_config(top.has("train") ? top.object("train")
                                               : JsonReader(Json::object(), path, "train"));
  build_classifier(top.object("model"), c.data.num_classes());  // validates the model
  top.finish();
  apply_overrides(ov, c.train, c.data, c.json);
  return c;
}

std::shared_ptr<Classifier> build_model(const SingleConfig& c) {
  JsonReader top(c.json, c.path, "");
  return build_classifier(top.object("model"), c.data.num_classes());
}

EvalResult evaluate(nn::Module& model, const data::ImageDataset& ds, const DataConfig& dc,
                    int64_t batch_size, int64_t limit) {
  autograd::NoGradGuard ng;
  const bool was_training = model.is_training();
  model.eval();
  data::DataLoader loader(ds, loader_options(dc, batch_size, 0, false, limit));
  loader.start_epoch(0);
  data::Batch b;
  EvalResult r;
  int64_t correct = 0;
  double loss_sum = 0.0;
  const Device device = module_device(model);
  while (loader.next(b)) {
    Tensor logits = model.forward(b.x.to(device));
    CrossEntropyOptions ce;
    ce.reduction = Reduction::sum;
    loss_sum += cross_entropy(logits, b.y.to(device), ce).item();
    correct += count_correct(logits, b.y);
    r.samples += b.y.numel();
  }
  model.train(was_training);
  if (r.samples > 0) {
    r.loss = loss_sum / static_cast<double>(r.samples);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
  }
  return r;
}

Json train_single(const SingleConfig& c, const RunOverrides& ov) {
  const Device device = run_device(ov.device, "mel train");
  const TrainConfig& tc = c.train;

  // Everything that can fail on bad input happens before the run folder is touched.
  const data::ImageDataset train_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::train);
  const data::ImageDataset test_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::test);
  auto model = build_model(c);
  Generator gen(tc.seed);
  model->reset_parameters(gen);
  model->to(device);
  nn::FlatParameters flat(*model);
  data::DataLoader loader(train_ds,
                          loader_options(c.data, tc.batch_size, tc.seed, true, tc.train_limit));
  const int64_t steps_per_epoch = loader.num_batches();
  MEL_CHECK(steps_per_epoch > 0, "mel train: the training set is empty");
  auto optimizer = make_optimizer(tc.optimizer, flat);
  auto schedule = make_schedule(tc.schedule, tc.optimizer, steps_per_epoch, tc.epochs);
  CrossEntropyOptions ce;
  ce.label_smoothing = tc.label_smoothing;

  const std::string out = ov.out.empty() ? "runs/" + c.name : ov.out;
  ensure_dir(out);
  const bool terminal = ov.progress && stdout_is_terminal();
  fmt::print(
      "mel train {}: {} parameters, {} train / {} test samples, batch {}, {} epochs, "
      "{}\n",
      c.name, model->num_parameters(), loader.num_samples(),
      tc.test_limit ? std::min<int64_t>(tc.test_limit, test_ds.size()) : test_ds.size(),
      tc.batch_size, tc.epochs, compute_description(device));

  std::string metrics;
  double train_seconds = 0.0;
  int64_t step = 0, samples_seen = 0;
  EvalResult last_eval;
  for (int64_t epoch = 0; epoch < tc.epochs; ++epoch) {
    model->train();
    loader.start_epoch(epoch);
    Progress progress(fmt::format("epoch {}/{}", epoch + 1, tc.epochs), steps_per_epoch, terminal);
    const auto t0 = Clock::now();
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0, done = 0;
    double lr = 0.0;
    data::Batch b;
    while (loader.next(b)) {
      const nn::LrMomentum lm = schedule->at(step);
      lr = lm.lr;
      Tensor logits = model->forward(b.x.to(device));
      Tensor loss = cross_entropy(logits, b.y.to(device), ce);
      optimizer->zero_grad();
      loss.backward();
      if (tc.clip_grad_norm > 0) nn::clip_grad_norm(flat, tc.clip_grad_norm);
      optimizer->step(lm.lr, lm.momentum);
      const double l = loss.item();
      MEL_CHECK(std::isfinite(l),
                "mel train: the loss became {} at epoch {} step {} (lr {}); "
                "lower the learning rate or enable clip_grad_norm",
                l, epoch + 1, step, lm.lr);
      const int64_t n = b.y.numel();
      loss_sum += l * static_cast<double>(n);
      correct += count_correct(logits, b.y);
      seen += n;
      ++done;
      ++step;
      progress.update(done, seen, loss_sum / seen, static_cast<double>(correct) / seen);
    }
    progress.finish();
    const double epoch_seconds = seconds_since(t0);
    train_seconds += epoch_seconds;
    samples_seen += seen;
    last_eval = evaluate(*model, test_ds, c.data, tc.eval_batch_size, tc.test_limit);
    fmt::print(
        "epoch {}/{}: train loss {:.4f} acc {:.2f}%  test loss {:.4f} acc {:.2f}%  "
        "{:.0f} samples/s  ({})\n",
        epoch + 1, tc.epochs, loss_sum / seen, 100.0 * correct / seen, last_eval.loss,
        100.0 * last_eval.accuracy, seen / epoch_seconds, format_duration(epoch_seconds));
    Json line = {{"epoch", epoch + 1},
                 {"step", step},
                 {"lr", lr},
                 {"train_loss", loss_sum / seen},
                 {"train_accuracy", static_cast<double>(correct) / seen},
                 {"test_loss", last_eval.loss},
                 {"test_accuracy", last_eval.accuracy},
                 {"epoch_seconds", epoch_seconds},
                 {"samples_per_second", seen / epoch_seconds}};
    metrics += line.dump() + "\n";
    write_file_atomic(out + "/metrics.jsonl", metrics);
    save_checkpoint(out, *model, optimizer.get(), {c.json.dump(), epoch + 1, step});
  }

  Json report = {{"config", c.json},
                 {"device", device.str()},
                 {"epochs", tc.epochs},
                 {"train_samples", loader.num_samples()},
                 {"test_samples", last_eval.samples},
                 {"params", {{"total", model->num_parameters()}}},
                 {"accuracy", {{"1", last_eval.accuracy}}},
                 {"test_loss", last_eval.loss},
                 {"train_seconds", train_seconds},
                 {"samples_per_second", samples_seen / train_seconds},
                 {"threads", omp_get_max_threads()}};
  if (device.is_cuda()) report["peak_gpu_memory_bytes"] = memory_stats(device).peak_bytes;
  write_file_atomic(out + "/report.json", report.dump(2) + "\n");
  fmt::print(
      "test accuracy {:.2f}% after {} epochs ({} training, {:.0f} samples/s); run folder "
      "{}\n",
      100.0 * last_eval.accuracy, tc.epochs, format_duration(train_seconds),
      samples_seen / train_seconds, out);
  return report;
}

Json eval_single(const std::string& run, const RunOverrides& ov) {
  const Device device = run_device(ov.device, "mel eval");
  const Checkpoint ckpt = read_checkpoint(run);
  const std::string& file = ckpt.file;
  const CheckpointInfo& info = ckpt.info;
  Json cfg;
  try {
    cfg = Json::parse(info.config_json);
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: the config stored in the checkpoint is not valid JSON: {}", file, e.what());
  }
  SingleConfig c = parse_single_config(std::move(cfg), file + " (stored config)", ov);
  auto model = build_model(c);
  load_model_checkpoint(ckpt, *model);
  model->to(device);
  const data::ImageDataset test_ds =
      data::load_dataset(c.data.dataset, c.data.dir, data::Split::test);
  const EvalResult r =
      evaluate(*model, test_ds, c.data, c.train.eval_batch_size, c.train.test_limit);
  fmt::print("{} (epoch {}): test accuracy {:.2f}% loss {:.4f} on {} samples\n", c.name, info.epoch,
             100.0 * r.accuracy, r.loss, r.samples);
  return {{"accuracy", {{"1", r.accuracy}}},
          {"test_loss", r.loss},
          {"test_samples", r.samples},
          {"epoch", info.epoch}};
}

}  // namespace mel::app
