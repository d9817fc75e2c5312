// LRP rules and composites (zennit's names and defaults), as data. Each rule and each built-in
// composite is one row of a table (lrp_rules.cpp): the names accepted, the checks, the JSON a
// composite writes, the method catalogue and the error lists all come from those rows, so a new
// rule or composite is one row there (plus its closed form in rule_ops.cpp).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace candela {

// One LRP rule and its parameters (zennit's names and defaults).
struct LrpRule {
  std::string name = "epsilon";  // a row of lrp_rules(); z_plus is stored as alpha_beta (1, 0)
  double epsilon = 1e-6;         // epsilon rule's stabiliser
  double stabilizer = 1e-6;      // every other rule's
  double gamma = 0.25;
  double alpha = 2.0, beta = 1.0;
  bool zero_bias = false;        // zennit's zero_params="bias"
  std::vector<double> low, high; // z-box bounds: one value, or one per input channel

  static const std::vector<std::string>& names();
  // `defaults` under the rule `name` (z_plus: alpha_beta with alpha 1, beta 0); no checks.
  static LrpRule named(const std::string& name, LrpRule defaults);
  void validate() const;
  // The parameters this rule reads, as {"epsilon": ...} (what a composite file would hold).
  nlohmann::json parameters() const;
};

// The parameters a rule reads (LrpRuleInfo::params).
enum LrpParam : unsigned {
  kLrpEpsilon = 1u << 0,     // epsilon
  kLrpStabilizer = 1u << 1,  // stabilizer
  kLrpGamma = 1u << 2,       // gamma
  kLrpAlphaBeta = 1u << 3,   // alpha, beta (alpha - beta = 1)
  kLrpBounds = 1u << 4,      // low, high
};

struct LrpRuleInfo {
  const char* name;
  const char* description;   // one line, for the catalogue
  unsigned params;           // LrpParam bits
  bool for_layers;           // may be assigned to a linear or convolution layer
  const char* alias_of;      // z_plus: stored as alpha_beta (with alpha 1, beta 0); else null
};
const std::vector<LrpRuleInfo>& lrp_rules();
// "a, b, c".
std::string join_names(const std::vector<std::string>& names);
// "epsilon, zero, ..." of the rules that may be given for every layer (Lrp's `rule` option).
const std::string& lrp_layer_rule_list();

// Which rule each linear or convolution layer gets. The first entry that matches wins.
struct CompositeEntry {
  std::string type = "affine";  // "conv" (incl. transposed), "linear" or "affine" (either)
  std::string path;             // glob over the module path ("features.*"); empty: any
  bool first = false;           // only the first such layer in module definition order
  LrpRule rule;
};

struct Composite {
  std::string name;
  std::vector<CompositeEntry> entries;

  // A row of builtin_composites(), with the parameters of `defaults`.
  static Composite builtin(const std::string& name, const LrpRule& defaults);
  static const std::vector<std::string>& builtin_names();
  // One rule for every layer.
  static Composite uniform(const LrpRule& rule);
  // {"name": ..., "rules": [{"type": "conv", "path": "features.*", "first": true, "rule": "z_box",
  //   "low": -3, "high": 3, ...}, ...]}; parameters not given come from `defaults`.
  static Composite from_json(const nlohmann::json& j, const LrpRule& defaults, const std::string& source);
  nlohmann::json to_json() const;
};

struct CompositeInfo {
  const char* name;
  const char* description;  // one line, for the catalogue
  std::vector<CompositeEntry> (*entries)(const LrpRule& defaults);
};
// zennit's layer maps: epsilon_plus, epsilon_plus_flat, epsilon_gamma_box, epsilon_alpha2_beta1,
// epsilon_alpha2_beta1_flat.
const std::vector<CompositeInfo>& builtin_composites();

// "epsilon_plus" or a JSON file's path -> the composite (rules not given take `defaults`).
// check_only: only refuse an unknown built-in name (a file is read when used).
Composite resolve_composite(const std::string& name_or_file, const LrpRule& defaults, bool check_only = false);

// {"composites": {name: description, ..., "FILE.json": ...}, "rules": {name: description, ...,
// "other layers": ...}}: what `candela methods` shows with lrp.
nlohmann::json lrp_catalog();

}  // namespace candela
