// Whole-file reads and writes with the checks every reader of user files needs.
#pragma once

#include <cstddef>
#include <string>

namespace candela {

// Writes `bytes` to a temporary file next to `path`, flushes it to disk, then renames it over
// `path`, so a concurrent reader (the server, a watching UI) sees the old file or the new one,
// never a partial one. Throws IoError naming the path and the OS reason; the temporary file is
// removed on every failure.
void write_file_atomic(const std::string& path, const std::string& bytes);

// The whole content of `path`. Throws IoError when it is missing, a directory, unreadable, or
// larger than `max_bytes` (the caller's guard against loading something absurd into memory).
std::string read_file(const std::string& path, size_t max_bytes);

}  // namespace candela
