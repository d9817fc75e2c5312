// Catalog: name -> info (with a factory), the one registry shape behind methods and metrics.
// Adding twice is refused; an unknown name gets the closest names and the command that lists them.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "candela/core/error.h"
#include "candela/core/options.h"

namespace candela {

// Info needs `name` and `create(const nlohmann::json&) -> std::unique_ptr<Product>`.
template <class Info, class Product>
class Catalog {
 public:
  // kind: "method"; list_command: "candela methods" (named in errors).
  Catalog(std::string kind, std::string list_command) : kind_(std::move(kind)), list_(std::move(list_command)) {}

  // The facts every entry states in T::kTraits (name, family, description, reference), T's
  // options schema and a factory; the registry adds what is particular to its kind.
  template <class T>
  static Info info_of() {
    constexpr const auto& t = T::kTraits;
    Info info;
    info.name = t.name;
    info.family = t.family;
    info.description = t.description;
    info.reference = t.reference;
    info.schema = options_schema<typename T::Options>();
    info.create = [name = info.name](const nlohmann::json& j) -> std::unique_ptr<Product> {
      return std::make_unique<T>(options_from_json<typename T::Options>(j, name));
    };
    return info;
  }

  void add(Info info) {
    CANDELA_ASSERT(!contains(info.name), kind_, " '", info.name, "' is registered twice.");
    items_.push_back(std::move(info));
  }
  bool contains(const std::string& name) const {
    return std::any_of(items_.begin(), items_.end(), [&](const Info& i) { return i.name == name; });
  }
  // Unknown: InvalidArgument with a suggestion.
  const Info& get(const std::string& name) const {
    for (const auto& i : items_)
      if (i.name == name) return i;
    throw InvalidArgument(detail::str_cat("unknown ", kind_, " '", name, "'.", did_you_mean(name, names()), " Run `",
                                          list_, "` to list them."));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& i : items_) out.push_back(i.name);
    return out;
  }
  std::unique_ptr<Product> create(const std::string& name,
                                  const nlohmann::json& options = nlohmann::json::object()) const {
    return get(name).create(options);
  }
  const std::vector<Info>& items() const { return items_; }

 private:
  std::string kind_, list_;
  std::vector<Info> items_;
};

}  // namespace candela
