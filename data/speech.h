// Spoken-word datasets in the layout scripts/make_spoken_words.sh writes (and Speech Commands
// uses): DIR/<split>/<class>/<voice>_<rest>.wav, one mono clip per file. Clips are read through
// libsndfile, turned into log-mel features once and kept in DIR/.cache, keyed by the feature
// options and every file's name, size and modification time.
#pragma once
#include <string>
#include <vector>

#include "data/dataset.h"

namespace mel::data {

inline constexpr const char* kSpokenWordsName = "spoken-words";

// $MEL_DATA_HOME/spoken-words, else $HOME/.local/share/mel/spoken-words (the script's default).
std::string spoken_words_default_dir();

// The classes in label order: DIR/meta.json's "classes" when it has them, else the twelve of
// Speech Commands' keyword task (ten words, "_unknown_", "_silence_").
std::vector<std::string> spoken_word_classes(const std::string& dir);

// f32 features [N, 1, n_mels, frames], labels, class names and each clip's speaker (the file name
// up to its first '_'). A missing folder, a class with no clips, a clip that is not a mono WAV at
// the expected rate, too long or silent: errors naming the file and what was expected.
ImageDataset load_spoken_words(const std::string& dir, Split split, const SpeechOptions& o);

// The log-mel features [N, 1, n_mels, frames] of audio files, each a clip as read_clip takes it
// (mono, the options' rate, at most clip_samples, not silent), computed on all cores. An error
// names the first bad file in the list.
Tensor clip_features(const std::vector<std::string>& paths, const SpeechOptions& o);

}  // namespace mel::data
