// Typing the text of `--option key=value` by a method's schema (core/options.h).
#include "candela/core/options.h"


#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "candela/detail/text.h"

namespace candela {
using detail::str_cat;

nlohmann::json parse_option_value(const nlohmann::json& schema, const std::string& method, const std::string& key,
                                  const std::string& text) {
  if (!schema.contains(key)) {
    // The message options_from_json gives, so the CLI, the server and Python say the same.
    std::vector<std::string> keys;
    for (const auto& [k, _] : schema.items()) keys.push_back(k);
    detail::check_known_keys(nlohmann::json{{key, nullptr}}, keys, "option", "for method '" + method + "'",
                             " (see `candela methods`)");
  }
  const std::string type = schema[key].value("type", "string");
  auto fail = [&](const char* what) {
    return InvalidArgument(str_cat("option '", key, "' of '", method, "' expects ", what, ", got '", text, "'."));
  };
  if (type == "integer") {
    long long v = 0;
    if (!detail::parse_int64(text, v)) throw fail("an integer (in the 64-bit range)");
    return v;
  }
  if (type == "number") {
    char* stop = nullptr;
    double v = std::strtod(text.c_str(), &stop);
    if (text.empty() || *stop != '\0' || !std::isfinite(v)) throw fail("a finite number");
    return v;
  }
  if (type == "boolean") {
    std::string t = text;
    std::transform(t.begin(), t.end(), t.begin(), ::tolower);
    if (t == "true" || t == "1" || t == "yes" || t == "on") return true;
    if (t == "false" || t == "0" || t == "no" || t == "off") return false;
    throw fail("true or false (also True/False, 1/0, yes/no, on/off)");
  }
  if (type == "string") return text;
  if ((type == "string[]" || type == "integer[]" || type == "number[]") && !text.empty() && text[0] != '[') {
    // Comma-separated: --option layers=layer3,layer4 or --option neuron_selector=3,1,1
    nlohmann::json list = nlohmann::json::array();
    for (const auto& item : detail::split(text, ',')) {
      if (type == "string[]") {
        list.push_back(item);
      } else {
        char* stop = nullptr;
        double v = std::strtod(item.c_str(), &stop);
        if (item.empty() || *stop != '\0') throw fail(type == "integer[]" ? "comma-separated integers" : "comma-separated numbers");
        if (type == "integer[]") {
          if (!(std::abs(v) < 9.2e18) || v != static_cast<double>(static_cast<int64_t>(v)))
            throw fail("comma-separated integers");
          list.push_back(static_cast<int64_t>(v));
        } else {
          list.push_back(v);
        }
      }
    }
    return list;
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    throw fail("JSON");
  }
}

}  // namespace candela
