// Run-folder output: files are written to a temporary name and renamed into place, so a crash
// never leaves a half-written report, metrics file or checkpoint behind.
#pragma once
#include <string>

namespace mel::train {

void write_file_atomic(const std::string& path, const std::string& content);
// Creates the folder (and parents); an existing regular file at `path` is an error.
void ensure_dir(const std::string& path);
bool stdout_is_terminal();
std::string format_duration(double seconds);  // "1:05:09", "4:07"

}  // namespace mel::train
