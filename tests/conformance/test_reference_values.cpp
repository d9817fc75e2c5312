// Candela against plain-autograd re-derivations of each method (computed in Python by
// tests/fixtures/make_fixtures.py from Captum's definitions): the same numbers to 1e-4.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

using namespace candela;
using candela::testing::fixture;
using candela::testing::rel_error;

TEST(ReferenceValues, GradientMethodsMatchAutogradRederivations) {
  std::ifstream in(fixture("reference_attributions.json"));
  ASSERT_TRUE(in.good());
  auto cases = nlohmann::json::parse(in);
  ASSERT_GE(cases.size(), 20u);
  std::map<std::string, Model> models;
  for (const auto& c : cases) {
    const std::string name = c["model"];
    if (!models.count(name)) models.emplace(name, Model::load(fixture(name)));
    const Model& m = models.at(name);
    auto to_tensor = [&](const nlohmann::json& j) {
      std::vector<float> flat;
      std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& v) {
        if (v.is_array()) for (const auto& e : v) walk(e);
        else flat.push_back(v.get<float>());
      };
      walk(j);
      std::vector<int64_t> shape = {static_cast<int64_t>(c["inputs"].size())};
      shape.insert(shape.end(), m.input_spec().shape.begin(), m.input_spec().shape.end());
      return at::tensor(flat).view(shape);
    };
    ExplainRequest r;
    r.inputs = to_tensor(c["inputs"]);
    r.target = Target::indices(c["targets"].get<std::vector<int64_t>>());
    r.baseline = Baseline::parse(c["baseline"]);
    auto a = Registry::builtin().create(c["method"], c["options"])->explain(m, r);
    EXPECT_LT(rel_error(a.values, to_tensor(c["values"])), 1e-4)
        << name << " " << c["method"] << " " << c["options"].dump() << " baseline " << c["baseline"];
  }
}
