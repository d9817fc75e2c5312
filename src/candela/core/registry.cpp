#include "candela/core/registry.h"

#include "candela/core/error.h"

namespace candela {

const Registry& Registry::builtin() {
  static const Registry registry = [] {
    Registry r;
    register_gradient_methods(r);
    register_cam_methods(r);
    register_layer_methods(r);
    register_perturbation_methods(r);
    register_rule_methods(r);
    return r;
  }();
  return registry;
}

void Registry::add(MethodInfo info) {
  CANDELA_CHECK(!contains(info.name), "method '", info.name, "' is registered twice.");
  methods_.push_back(std::move(info));
}

bool Registry::contains(const std::string& name) const {
  return std::any_of(methods_.begin(), methods_.end(), [&](const auto& m) { return m.name == name; });
}

const MethodInfo& Registry::get(const std::string& name) const {
  for (const auto& m : methods_)
    if (m.name == name) return m;
  throw InvalidArgument(detail::str_cat("unknown method '", name, "'.", did_you_mean(name, names()),
                                        " Run `candela methods` to list them."));
}

std::vector<std::string> Registry::names() const {
  std::vector<std::string> out;
  for (const auto& m : methods_) out.push_back(m.name);
  return out;
}

std::unique_ptr<Explainer> Registry::create(const std::string& name, const nlohmann::json& options) const {
  return get(name).create(options);
}

nlohmann::json Registry::to_json() const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& m : methods_)
    out.push_back({{"name", m.name}, {"family", m.family}, {"description", m.description},
                   {"reference", m.reference}, {"options", m.schema}, {"completeness", m.completeness},
                   {"stochastic", m.stochastic}, {"uses_baseline", m.uses_baseline},
                   {"uses_target", m.uses_target}, {"catalog", m.catalog}});
  return out;
}

}  // namespace candela
