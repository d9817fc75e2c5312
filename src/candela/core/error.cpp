#include "candela/core/error.h"

#include <algorithm>

namespace candela {
namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace

std::string did_you_mean(const std::string& name, const std::vector<std::string>& candidates) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) {
    size_t d = edit_distance(name, c);
    bool prefix = !name.empty() && (c.rfind(name, 0) == 0 || name.rfind(c, 0) == 0);
    size_t limit = std::max<size_t>(2, std::max(name.size(), c.size()) / 3);
    if (d <= limit || prefix) scored.emplace_back(prefix ? std::min<size_t>(d, 1) : d, c);
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  if (scored.empty()) return "";
  std::string out = " Did you mean '" + scored[0].second + "'";
  if (scored.size() > 1) out += " or '" + scored[1].second + "'";
  return out + "?";
}

}  // namespace candela
