// Text helpers shared by every parser of flag values: one splitter, whole-string numbers.
#pragma once

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace candela::detail {

// Splits at every `sep`, keeping empty items: "a,,b" -> {"a", "", "b"}, "" -> {""}.
inline std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t end = text.find(sep, start);
    out.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

// The whole of `text` as a base-10 int64: false when it is empty, has anything after the number,
// or does not fit (strtoll alone clamps to INT64_MAX without saying so).
inline bool parse_int64(const std::string& text, long long& value) {
  if (text.empty()) return false;
  char* stop = nullptr;
  errno = 0;
  value = std::strtoll(text.c_str(), &stop, 10);
  return errno != ERANGE && stop && *stop == '\0';
}

// The whole of `text` as a double: false when it is empty or has anything after the number.
inline bool parse_double(const std::string& text, double& value) {
  if (text.empty()) return false;
  char* stop = nullptr;
  value = std::strtod(text.c_str(), &stop);
  return stop && *stop == '\0';
}

}  // namespace candela::detail
