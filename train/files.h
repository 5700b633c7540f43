// Run-folder output: files are written to a temporary name of their own (path.tmp.PID.N), flushed
// to disk and renamed into place, so a crash never leaves a half-written report, metrics file or
// checkpoint behind and two writers never share a temporary file. A run folder is claimed by one
// process at a time through an flock on RUN/.lock holding the claimant's pid.
#pragma once
#include <string>

namespace mel::train {

void write_file_atomic(const std::string& path, const std::string& content);
// Makes the renames and creations inside `dir` durable (best effort: errors are ignored).
void sync_dir(const std::string& dir);
// Creates the folder (and parents); an existing regular file at `path` is an error.
void ensure_dir(const std::string& path);
// Creates, writes and removes a probe file in `dir` (which must exist): a folder the run cannot
// write is an error now, not after the first epoch.
void check_writable(const std::string& dir);
bool stdout_is_terminal();
std::string format_duration(double seconds);  // "1:05:09", "4:07"

// An exclusive claim on a run folder (created if needed) for the holder's lifetime: flock on
// dir/.lock, which holds the claimant's pid. A folder claimed by another process is an error naming
// that process's pid; claims of one folder within a process nest (the innermost release keeps the
// lock until the outermost one ends). The lock file is left in place (removing it would let two
// processes lock different files of the same name).
class RunFolderLock {
 public:
  explicit RunFolderLock(const std::string& dir);
  ~RunFolderLock();
  RunFolderLock(const RunFolderLock&) = delete;
  RunFolderLock& operator=(const RunFolderLock&) = delete;

 private:
  std::string key_;
};

}  // namespace mel::train
