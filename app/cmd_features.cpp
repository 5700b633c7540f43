// `mel features CONFIG --out DIR`: the inputs a config trains on, as .npy files another program
// can read (tools/torch_speech.py does): per split <split>_x.npy (u8 images, or f32 log-mel
// features before normalisation) and <split>_y.npy (i64 labels), and classes.json.
#include <fmt/format.h>

#include <filesystem>

#include "app/commands.h"
#include "app/ensemble_config.h"
#include "app/single.h"
#include "data/npy.h"
#include "train/files.h"

namespace mel::app {

CLI::App* add_features(CLI::App& app, CliOptions& o) {
  auto* cmd = app.add_subcommand(
      "features", "write a config's data (images or log-mel features) and labels as .npy files");
  cmd->add_option("config", o.config, "config file")->required();
  cmd->add_option("--out", o.out, "folder for the files")->required();
  cmd->add_option("--data", o.overrides.data_dir, "dataset folder (overrides the config)");
  cmd->add_option("--splits", o.splits, "comma-separated splits: train, validation, test")
      ->capture_default_str();
  return cmd;
}

void run_features(const CliOptions& o) {
  Json cfg = read_json_file(o.config);
  RunOverrides ov;
  ov.data_dir = o.overrides.data_dir;
  DataConfig dc;
  if (is_mel_config(cfg)) {
    dc = parse_mel_config(std::move(cfg), o.config, ov).data;
  } else {
    dc = parse_single_config(std::move(cfg), o.config, ov).data;
  }
  if (!ov.data_dir.empty()) dc.dir = ov.data_dir;
  std::vector<data::Split> splits;
  for (size_t begin = 0; begin <= o.splits.size();) {
    const size_t end = std::min(o.splits.find(',', begin), o.splits.size());
    const std::string name = o.splits.substr(begin, end - begin);
    if (name == "train") {
      splits.push_back(data::Split::train);
    } else if (name == "validation") {
      splits.push_back(data::Split::validation);
    } else if (name == "test") {
      splits.push_back(data::Split::test);
    } else {
      fail("--splits: unknown split '{}' (expected train, validation or test, separated by commas)",
           name);
    }
    begin = end + 1;
  }
  std::filesystem::create_directories(o.out);
  std::vector<std::string> classes;
  for (data::Split s : splits) {
    const data::ImageDataset ds = load_split(dc, s);
    const std::string base = (std::filesystem::path(o.out) / data::split_name(s)).string();
    train::write_file_atomic(base + "_x.npy", data::npy_bytes(ds.images));
    train::write_file_atomic(base + "_y.npy", data::npy_bytes(ds.labels));
    fmt::print("{}: {} {} {} and labels\n", base, ds.size(), dtype_name(ds.images.dtype()),
               shape_str(ds.images.shape()));
    if (classes.empty()) classes = ds.class_names;
  }
  Json meta{{"dataset", dc.dataset}, {"classes", classes}};
  train::write_file_atomic((std::filesystem::path(o.out) / "classes.json").string(),
                           meta.dump(1) + "\n");
}

}  // namespace mel::app
