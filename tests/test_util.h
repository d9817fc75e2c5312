// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>
#include <torch/script.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "candela/candela.h"

namespace candela::testing {

// Measured batch sizes (EvalOptions::measure_batch_size) go to the build tree, not ~/.cache,
// unless the caller chose a place.
inline const bool kTestCacheDir = [] {
  ::setenv("CANDELA_CACHE_DIR", CANDELA_FIXTURE_DIR "/../test-cache", /*overwrite=*/0);
  return true;
}();

// The fixture folders are compiled in; CANDELA_FIXTURE_DIR / CANDELA_GROUNDTRUTH_DIR in the environment
// point the suite at fixtures rebuilt elsewhere (scripts/check-portability.sh).
inline std::string env_or(const char* variable, const char* fallback) {
  const char* v = std::getenv(variable);
  return v && *v ? v : fallback;
}
inline std::string fixture(const std::string& name) { return env_or("CANDELA_FIXTURE_DIR", CANDELA_FIXTURE_DIR) + "/" + name; }
inline std::string groundtruth(const std::string& name) {
  return env_or("CANDELA_GROUNDTRUTH_DIR", CANDELA_GROUNDTRUTH_DIR) + "/" + name;
}

// y = x W^T + b as a scripted module, built in C++ so known-answer tests need no fixture.
inline Model linear_model(const at::Tensor& weight, const at::Tensor& bias) {
  torch::jit::Module m("LinearFixture");
  m.register_parameter("weight", weight.clone(), false);
  m.register_parameter("bias", bias.clone(), false);
  m.define(R"(
def forward(self, x):
    return torch.matmul(x, self.weight.t()) + self.bias
)");
  InputSpec spec;
  spec.shape = {weight.size(1)};
  spec.layout = "NC";
  return Model::from_module(m, spec);
}

// A fresh temporary folder, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "candela-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// max |a - b| / max(|b|, tiny): a relative error for whole tensors.
inline double rel_error(const at::Tensor& a, const at::Tensor& b) {
  auto diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
  return diff / std::max(b.to(at::kDouble).abs().max().item<double>(), 1e-12);
}

}  // namespace candela::testing
