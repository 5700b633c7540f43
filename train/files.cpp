#include "train/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "core/error.h"

namespace mel::train {

namespace {

std::string errno_text(int err) {
  return std::strerror(err);
}

// A temporary name no other process or thread uses: path.tmp.PID.N.
std::string temporary_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, ::getpid(), counter.fetch_add(1));
}

// Writes all of `content` to a new file `path` and flushes it to disk; false (errno set) on
// failure, the file removed.
bool write_new_file(const std::string& path, const std::string& content, int& err) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    err = errno;
    return false;
  }
  const char* p = content.data();
  size_t left = content.size();
  bool ok = true;
  while (ok && left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (ok && ::fsync(fd) != 0) ok = false;
  if (!ok) err = errno;
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) ::unlink(path.c_str());
  return ok;
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = temporary_name(path);
  int err = 0;
  if (!write_new_file(tmp, content, err)) {
    fail("{}: cannot write: {}{}", tmp, errno_text(err), err == ENOSPC ? " (disk full)" : "");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename into place: {}", path, errno_text(err));
  }
  sync_dir(std::filesystem::path(path).parent_path().string());
}

void sync_dir(const std::string& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

void ensure_dir(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !std::filesystem::is_directory(path, ec)) {
    fail("{}: exists and is not a folder", path);
  }
  std::filesystem::create_directories(path, ec);
  if (ec) fail("{}: cannot create the folder: {}", path, ec.message());
}

void check_writable(const std::string& dir) {
  const std::string probe = fmt::format("{}/.write-probe.{}", dir, ::getpid());
  int err = 0;
  if (!write_new_file(probe, "mel\n", err)) {
    fail("{}: the run folder is not writable (creating {} failed: {})", dir, probe,
         errno_text(err));
  }
  if (::unlink(probe.c_str()) != 0) {
    fail("{}: the run folder is not writable (removing {} failed: {})", dir, probe,
         errno_text(errno));
  }
}

bool stdout_is_terminal() {
  return isatty(fileno(stdout)) != 0;
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

namespace {

struct HeldLock {
  int fd = -1;
  int claims = 0;
};

std::mutex& locks_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::string, HeldLock>& held_locks() {
  static std::map<std::string, HeldLock> m;
  return m;
}

std::string read_pid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string s = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

}  // namespace

RunFolderLock::RunFolderLock(const std::string& dir) {
  ensure_dir(dir);
  std::error_code ec;
  key_ = std::filesystem::weakly_canonical(dir, ec).string();
  if (ec || key_.empty()) key_ = dir;
  std::lock_guard<std::mutex> guard(locks_mutex());
  HeldLock& held = held_locks()[key_];
  if (held.claims > 0) {
    ++held.claims;
    return;
  }
  const std::string file = dir + "/.lock";
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    held_locks().erase(key_);
    fail("{}: cannot open the run folder's lock file {}: {}", dir, file, errno_text(err));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string pid = err == EWOULDBLOCK ? read_pid(fd) : "";
    ::close(fd);
    held_locks().erase(key_);
    if (err == EWOULDBLOCK) {
      fail(
          "{}: the run folder is in use by another mel process (pid {}, holding {}); wait for it "
          "to end or choose another --out",
          dir, pid, file);
    }
    fail("{}: cannot lock {}: {}", dir, file, errno_text(err));
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds regardless; the pid only makes the other process's error clearer.
  }
  held.fd = fd;
  held.claims = 1;
}

RunFolderLock::~RunFolderLock() {
  std::lock_guard<std::mutex> guard(locks_mutex());
  auto it = held_locks().find(key_);
  if (it == held_locks().end()) return;
  if (--it->second.claims > 0) return;
  ::close(it->second.fd);  // releases the flock
  held_locks().erase(it);
}

}  // namespace mel::train
