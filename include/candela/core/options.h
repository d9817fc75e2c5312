// Options reflection: every method's options struct lists its fields once, in
//   template <class V> void visit(V& v) { v(kField, field, "description"); ... }
// and these helpers derive JSON output, JSON input (unknown keys rejected with a
// suggestion) and a self-describing schema from that one list. The CLI, the server and
// the Python bindings read the schema, so a new option needs no front-end change.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "candela/core/error.h"

namespace candela {

namespace detail {
template <class T>
const char* json_type_name() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_integral_v<T>) return "integer";
  else if constexpr (std::is_floating_point_v<T>) return "number";
  else if constexpr (std::is_same_v<T, std::string>) return "string";
  else if constexpr (std::is_same_v<T, std::vector<double>>) return "number[]";
  else if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "integer[]";
  else if constexpr (std::is_same_v<T, std::vector<std::string>>) return "string[]";
  else return "object";
}

struct ToJson {
  nlohmann::json out = nlohmann::json::object();
  template <class T>
  void operator()(const char* key, T& value, const char*, std::vector<std::string> = {}) {
    out[key] = value;
  }
};

struct Schema {
  nlohmann::json out = nlohmann::json::object();
  template <class T>
  void operator()(const char* key, T& value, const char* description,
                  std::vector<std::string> choices = {}) {
    nlohmann::json field = {{"type", json_type_name<T>()}, {"default", value},
                            {"description", description}};
    if (!choices.empty()) field["choices"] = choices;
    out[key] = field;
  }
};

struct FromJson {
  const nlohmann::json& in;
  std::vector<std::string> known;
  template <class T>
  void operator()(const char* key, T& value, const char*, std::vector<std::string> choices = {}) {
    known.emplace_back(key);
    auto it = in.find(key);
    if (it == in.end()) return;
    try {
      if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        // Accept 3.0 but not 3.5 for an integer option.
        CANDELA_CHECK(it->is_number_integer() ||
                          (it->is_number_float() && it->template get<double>() ==
                                                        static_cast<double>(static_cast<int64_t>(it->template get<double>()))),
                      "option '", key, "' expects an integer, got ", it->dump(), ".");
        value = static_cast<T>(it->template get<double>());
      } else if constexpr (std::is_floating_point_v<T>) {
        CANDELA_CHECK(it->is_number(), "option '", key, "' expects a number, got ", it->dump(), ".");
        value = it->template get<T>();
      } else if constexpr (std::is_same_v<T, bool>) {
        CANDELA_CHECK(it->is_boolean(), "option '", key, "' expects true or false, got ", it->dump(), ".");
        value = it->template get<bool>();
      } else {
        value = it->template get<T>();
      }
    } catch (const nlohmann::json::exception&) {
      throw InvalidArgument(detail::str_cat("option '", key, "' expects a value of type ",
                                            json_type_name<T>(), ", got ", it->dump(), "."));
    }
    if constexpr (std::is_same_v<T, std::string>) {
      if (!choices.empty()) {
        bool ok = std::find(choices.begin(), choices.end(), value) != choices.end();
        std::string list;
        for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
        CANDELA_CHECK(ok, "option '", key, "' must be one of ", list, "; got '", value, "'.",
                      did_you_mean(value, choices));
      }
    }
  }
};
// Refuses the first key of `j` that is not in `known`: "unknown <what> '<key>' <where>. Did you
// mean ...? Its <what>s are: a, b<tail>."
inline void check_known_keys(const nlohmann::json& j, const std::vector<std::string>& known, const std::string& what,
                             const std::string& where, const std::string& tail = "") {
  for (const auto& [key, _] : j.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::vector<std::string> sorted = known;
    std::sort(sorted.begin(), sorted.end());
    std::string list;
    for (const auto& k : sorted) list += (list.empty() ? "" : ", ") + k;
    throw InvalidArgument(str_cat("unknown ", what, " '", key, "' ", where, ".", did_you_mean(key, known),
                                  known.empty() ? str_cat(" It takes no ", what, "s") : str_cat(" Its ", what, "s are: ", list),
                                  tail, "."));
  }
}
}  // namespace detail

template <class Options>
nlohmann::json options_to_json(Options o) {
  detail::ToJson v;
  o.visit(v);
  return v.out;
}

template <class Options>
nlohmann::json options_schema() {
  Options o;
  detail::Schema v;
  o.visit(v);
  return v.out;
}

// Starts from the defaults, applies `j`, validates. `method` names the method in errors.
template <class Options>
Options options_from_json(const nlohmann::json& j, const std::string& method) {
  Options o;
  if (j.is_null()) {
    o.validate();
    return o;
  }
  CANDELA_CHECK(j.is_object(), "options for '", method, "' must be a JSON object, got ", j.dump(), ".");
  detail::FromJson v{j, {}};
  o.visit(v);
  detail::check_known_keys(j, v.known, "option", "for method '" + method + "'", " (see `candela methods`)");
  o.validate();
  return o;
}

// Turns the text of `--option key=value` into JSON of the type the schema declares.
nlohmann::json parse_option_value(const nlohmann::json& schema, const std::string& method,
                                  const std::string& key, const std::string& text);

}  // namespace candela
