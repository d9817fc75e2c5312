// Registry: method name -> factory and self-describing options schema. The CLI, the server
// and the Python bindings are generated from it; adding a method is one line in its
// family's register function.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "candela/core/catalog.h"
#include "candela/core/explainer.h"
#include "candela/core/method.h"
#include "candela/core/options.h"

namespace candela {

struct MethodInfo {
  std::string name;         // "integrated_gradients"
  std::string family;       // "gradient"
  std::string description;  // one line
  std::string reference;    // paper
  nlohmann::json schema;    // {option: {type, default, description[, choices]}}
  bool completeness = false;  // attributions sum to f(x) - f(baseline) (up to the reported delta)
  bool stochastic = false;    // uses the `seed` option
  bool uses_baseline = false;
  bool uses_target = true;    // false: the method explains something else (a neuron, the activations)
  // Named lists a front end shows with the method, e.g. LRP's composites and rules:
  // {"composites": {"epsilon_plus": "...", ...}, "rules": {...}} (name -> one-line description).
  nlohmann::json catalog = nlohmann::json::object();
  std::function<std::unique_ptr<Explainer>(const nlohmann::json& options)> create;
};

class Registry : public Catalog<MethodInfo, Explainer> {
 public:
  Registry() : Catalog("method", "candela methods") {}
  // Every built-in method, registered on first use.
  static const Registry& builtin();
  const std::vector<MethodInfo>& methods() const { return items(); }
  // A method that states its facts in E::kTraits (core/method.h).
  template <class E>
  void add();
  using Catalog::add;
  nlohmann::json to_json() const;  // the whole catalogue, for front ends
};

namespace detail {
// E::catalog() exists (written without `requires`: the fuzz harnesses compile as C++17).
template <class E, class = void>
struct has_catalog : std::false_type {};
template <class E>
struct has_catalog<E, std::void_t<decltype(E::catalog())>> : std::true_type {};
}  // namespace detail

template <class E>
void Registry::add() {
  constexpr const MethodTraits& t = E::kTraits;
  MethodInfo m = info_of<E>();
  m.completeness = t.completeness;
  m.stochastic = m.schema.contains("seed");
  m.uses_baseline = t.uses_baseline;
  m.uses_target = t.uses_target;
  if constexpr (detail::has_catalog<E>::value) m.catalog = E::catalog();
  add(std::move(m));
}

// One per method family; Registry::builtin() calls them all.
void register_gradient_methods(Registry& registry);
void register_cam_methods(Registry& registry);
void register_layer_methods(Registry& registry);
void register_perturbation_methods(Registry& registry);  // calls the two below
void register_shapley_methods(Registry& registry);
void register_lime_methods(Registry& registry);
void register_attention_methods(Registry& registry);  // attention rollout, gradient rollout, attention flow
void register_propagation_methods(Registry& registry);  // guided backprop, deconvolution, DeepLIFT, LRP

}  // namespace candela
