#include "candela/io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "candela/core/error.h"

namespace candela {
namespace {

std::string os_reason(int err) { return std::strerror(err); }

// Closes the descriptor and, unless released, unlinks the temporary file: every early
// return or throw in write_file_atomic leaves nothing behind.
struct TempFile {
  std::string path;
  int fd = -1;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  CANDELA_CHECK(!path.empty(), "cannot write a file with an empty path. Pass the output file's path.");
  auto slash = path.find_last_of('/');
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  CANDELA_CHECK_T(IoError, !base.empty(), "cannot write '", path,
                  "': it names a directory, not a file. Add a file name.");

  // A name unique to this process and call: O_EXCL below turns a collision with another
  // writer's temporary into a retry rather than two writers sharing one file. Unlike mkstemp,
  // open() applies the umask to 0666, so the result has ordinary file permissions.
  static std::atomic<unsigned long> counter{0};
  TempFile tmp;
  for (int attempt = 0; tmp.fd < 0; ++attempt) {
    std::string name = detail::str_cat(dir, ".", base, ".tmp.", ::getpid(), ".", counter++);
    int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      tmp.path = name;
      tmp.fd = fd;
    } else if (errno != EEXIST || attempt >= 100) {
      throw IoError(detail::str_cat("cannot write '", path, "': ", os_reason(errno),
                                    ". Check that the directory exists and is writable."));
    }
  }
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = ::write(tmp.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      throw IoError(
          detail::str_cat("cannot write '", path, "': ", os_reason(errno), ". Check free disk space and quotas."));
    }
    done += static_cast<size_t>(n);
  }
  // Without fsync a crash shortly after the rename can leave an empty file under the new name.
  const bool synced = ::fsync(tmp.fd) == 0;
  int err = errno;
  const bool closed = ::close(std::exchange(tmp.fd, -1)) == 0;
  if (synced && !closed) err = errno;
  if (!synced || !closed) {
    throw IoError(
        detail::str_cat("cannot write '", path, "': ", os_reason(err), ". Check free disk space and quotas."));
  }
  if (::rename(tmp.path.c_str(), path.c_str()) != 0) {
    throw IoError(detail::str_cat("cannot write '", path, "': ", os_reason(errno),
                                  ". Check that the path is not a directory and is writable."));
  }
  tmp.keep = true;
}

std::string read_file(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw IoError(detail::str_cat("cannot read '", path, "': no such file. Check the path."));
    }
    throw IoError(detail::str_cat("cannot read '", path, "': ", os_reason(errno), "."));
  }
  CANDELA_CHECK_T(IoError, !S_ISDIR(st.st_mode), "cannot read '", path,
                  "': it is a directory. Pass the path of a file.");
  // A device (/dev/zero, /dev/urandom) never ends: reading it to the limit would take gigabytes.
  CANDELA_CHECK_T(IoError, !S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode), "cannot read '", path,
                  "': it is a device, not a file. Pass the path of a file.");
  auto too_large = [&](const std::string& size) {
    return IoError(detail::str_cat("cannot read '", path, "': it is ", size, "more than the limit of ", max_bytes,
                                   " bytes. Pass a smaller file or raise the limit."));
  };
  if (S_ISREG(st.st_mode) && static_cast<unsigned long long>(st.st_size) > max_bytes) {
    throw too_large(detail::str_cat(st.st_size, " bytes, "));
  }

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw IoError(detail::str_cat("cannot read '", path, "': ", os_reason(errno), ". Check the file's permissions."));
  }
  // Read to the end rather than trusting st_size: the file may grow meanwhile, and pipes and
  // /proc files report size 0. One byte past the limit is enough to know it is too large.
  const size_t cap = max_bytes < SIZE_MAX ? max_bytes + 1 : max_bytes;
  std::string out(std::min<size_t>(static_cast<size_t>(st.st_size) + 1, cap), '\0');
  size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      if (got == cap) break;
      out.resize(std::min(std::max<size_t>(out.size() * 2, 4096), cap));
    }
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      throw IoError(detail::str_cat("cannot read '", path, "': ", os_reason(err), "."));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got > max_bytes) throw too_large("");
  out.resize(got);
  return out;
}

}  // namespace candela
