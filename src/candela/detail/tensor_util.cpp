// Small tensor helpers (detail/tensor_util.h).
#include "candela/detail/tensor_util.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <functional>

namespace candela::detail {

std::string torch_message(const std::exception& e) {
  auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string s = c10_error ? c10_error->what_without_backtrace() : e.what();
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find('\n', start);
    if (end == std::string::npos) end = s.size();
    std::string line = s.substr(start, end - start);
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
    start = end + 1;
  }
  if (lines.empty()) return "unknown error";
  // TorchScript errors end with "RuntimeError: <message>"; plain ones are one line.
  for (auto it = lines.rbegin(); it != lines.rend(); ++it)
    if (it->find("Error: ") != std::string::npos) return it->substr(it->find_first_not_of(" \t"));
  return lines.front();
}

std::string shape_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

nlohmann::json tensor_to_json(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  auto c = t.detach().to(at::kCPU);
  bool integral = !c.is_floating_point();
  c = integral ? c.to(at::kLong).contiguous() : c.to(at::kDouble).contiguous();
  std::function<nlohmann::json(int64_t, int64_t)> rec = [&](int64_t dim, int64_t offset) -> nlohmann::json {
    if (dim == c.dim()) {
      if (integral) return c.data_ptr<int64_t>()[offset];
      double v = c.data_ptr<double>()[offset];
      return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    }
    nlohmann::json arr = nlohmann::json::array();
    for (int64_t i = 0; i < c.size(dim); ++i) arr.push_back(rec(dim + 1, offset + i * c.stride(dim)));
    return arr;
  };
  return rec(0, 0);
}

at::Tensor per_row(const at::Tensor& v, const at::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = v.size(0);
  return v.reshape(shape);
}

at::Generator seeded_generator(uint64_t seed, uint64_t stream) {
  // SplitMix64 of (seed, stream): nearby seeds and streams give unrelated generators.
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + stream + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return at::detail::createCPUGenerator(z ^ (z >> 31));
}

at::Tensor sum_per_sample(const at::Tensor& t) { return t.reshape({t.size(0), -1}).sum(1); }

at::Tensor model_input(const at::Tensor& x, bool token_ids) {
  if (!token_ids || !x.defined() || !x.is_floating_point()) return x;
  return x.detach().round().to(at::kLong);
}

}  // namespace candela::detail
