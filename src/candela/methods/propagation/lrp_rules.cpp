#include "candela/methods/propagation/lrp_rules.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "candela/core/error.h"
#include "candela/io/file.h"
#include "rule_ops.h"

namespace candela {
using detail::str_cat;

// ---- the tables ------------------------------------------------------------------------

namespace {

struct RuleRow {
  LrpRuleInfo info;
  int64_t code;  // detail::AffineRule of rule_affine
};

const std::vector<RuleRow>& rule_rows() {
  static const std::vector<RuleRow> rows = {
      {{"epsilon", "R_in = x * W^T (R / (z + epsilon sign z))", kLrpEpsilon, true, nullptr}, detail::kRuleEpsilon},
      {{"zero", "LRP-0: epsilon without a stabiliser", kLrpStabilizer, true, nullptr}, detail::kRuleZero},
      {{"gamma", "positive contributions boosted by gamma (zennit's generalised form)", kLrpStabilizer | kLrpGamma,
        true, nullptr},
       detail::kRuleGamma},
      {{"alpha_beta", "alpha * positive - beta * negative contributions, alpha - beta = 1",
        kLrpStabilizer | kLrpAlphaBeta, true, nullptr},
       detail::kRuleAlphaBeta},
      {{"z_plus", "positive contributions only (alpha 1, beta 0)", kLrpStabilizer | kLrpAlphaBeta, true, "alpha_beta"},
       detail::kRuleAlphaBeta},
      {{"flat", "uniform over the receptive field", kLrpStabilizer, true, nullptr}, detail::kRuleFlat},
      {{"w_square", "in proportion to squared weights", kLrpStabilizer, true, nullptr}, detail::kRuleWSquare},
      {{"z_box", "bounded input domain [low, high] (first layer)", kLrpStabilizer | kLrpBounds, true, nullptr},
       detail::kRuleZBox},
      {{"pass", "relevance passed on unchanged (what activations get; not for a layer that changes shape)", 0, false,
        nullptr},
       detail::kRuleGradient},
      {{"gradient", "the layer's plain gradient, no rule", 0, true, nullptr}, detail::kRuleGradient},
  };
  return rows;
}

const RuleRow* find_rule(const std::string& name) {
  for (const auto& r : rule_rows())
    if (name == r.info.name) return &r;
  return nullptr;
}

CompositeEntry entry(const std::string& type, const LrpRule& rule, bool first = false) {
  CompositeEntry e;
  e.type = type;
  e.rule = rule;
  e.first = first;
  return e;
}

}  // namespace

std::string join_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

const std::vector<LrpRuleInfo>& lrp_rules() {
  static const std::vector<LrpRuleInfo> infos = [] {
    std::vector<LrpRuleInfo> v;
    for (const auto& r : rule_rows()) v.push_back(r.info);
    return v;
  }();
  return infos;
}

const std::string& lrp_layer_rule_list() {
  static const std::string list = [] {
    std::vector<std::string> names;
    for (const auto& r : lrp_rules())
      if (r.for_layers) names.push_back(r.name);
    return join_names(names);
  }();
  return list;
}

const std::vector<CompositeInfo>& builtin_composites() {
  static const std::vector<CompositeInfo> rows = {
      {"epsilon_plus", "conv: z_plus; linear: epsilon",
       [](const LrpRule& d) {
         return std::vector<CompositeEntry>{entry("conv", LrpRule::named("z_plus", d)),
                                            entry("linear", LrpRule::named("epsilon", d))};
       }},
      {"epsilon_plus_flat", "first conv or linear: flat; conv: z_plus; linear: epsilon",
       [](const LrpRule& d) {
         return std::vector<CompositeEntry>{entry("affine", LrpRule::named("flat", d), true),
                                            entry("conv", LrpRule::named("z_plus", d)),
                                            entry("linear", LrpRule::named("epsilon", d))};
       }},
      {"epsilon_gamma_box", "first conv: z_box (low/high, default from the input spec); conv: gamma; linear: epsilon",
       [](const LrpRule& d) {
         return std::vector<CompositeEntry>{entry("conv", LrpRule::named("z_box", d), true),
                                            entry("conv", LrpRule::named("gamma", d)),
                                            entry("linear", LrpRule::named("epsilon", d))};
       }},
      {"epsilon_alpha2_beta1", "conv: alpha_beta (2, 1); linear: epsilon",
       [](const LrpRule& d) {
         LrpRule ab = LrpRule::named("alpha_beta", d);
         ab.alpha = 2.0, ab.beta = 1.0;
         return std::vector<CompositeEntry>{entry("conv", ab), entry("linear", LrpRule::named("epsilon", d))};
       }},
      {"epsilon_alpha2_beta1_flat", "first conv or linear: flat; conv: alpha_beta (2, 1); linear: epsilon",
       [](const LrpRule& d) {
         LrpRule ab = LrpRule::named("alpha_beta", d);
         ab.alpha = 2.0, ab.beta = 1.0;
         return std::vector<CompositeEntry>{entry("affine", LrpRule::named("flat", d), true), entry("conv", ab),
                                            entry("linear", LrpRule::named("epsilon", d))};
       }},
  };
  return rows;
}

nlohmann::json lrp_catalog() {
  nlohmann::json composites = nlohmann::json::object(), rules = nlohmann::json::object();
  for (const auto& c : builtin_composites()) composites[c.name] = c.description;
  composites["FILE.json"] =
      "{\"rules\": [{\"type\": \"conv\"|\"linear\"|\"affine\", \"path\": \"glob\", \"first\": true, "
      "\"rule\": \"gamma\", \"gamma\": 0.5}, ...]}: the first matching entry wins";
  for (const auto& r : lrp_rules()) rules[r.name] = r.description;
  rules["other layers"] =
      "activations and unfolded batch norms pass relevance; additions and average pooling split it in proportion "
      "(norm); max pooling routes it to the maximum; BatchNorm after a convolution is folded into it";
  return {{"composites", composites}, {"rules", rules}};
}

namespace detail {
int64_t affine_rule_code(const std::string& rule) {
  const RuleRow* r = find_rule(rule);
  CANDELA_ASSERT(r != nullptr, "LRP rule '", rule, "' has no row in the rule table");
  return r->code;
}
}  // namespace detail

// ---- rules -----------------------------------------------------------------------------

const std::vector<std::string>& LrpRule::names() {
  static const std::vector<std::string> n = [] {
    std::vector<std::string> v;
    for (const auto& r : lrp_rules()) v.push_back(r.name);
    return v;
  }();
  return n;
}

LrpRule LrpRule::named(const std::string& name, LrpRule r) {
  r.name = name;
  const RuleRow* row = find_rule(name);
  if (row && row->info.alias_of) {
    r.name = row->info.alias_of;
    if (name == "z_plus") r.alpha = 1.0, r.beta = 0.0;
  }
  return r;
}

void LrpRule::validate() const {
  const RuleRow* row = find_rule(name);
  CANDELA_CHECK(row != nullptr, "unknown LRP rule '", name, "'.", did_you_mean(name, names()), " Rules: ",
                join_names(names()), ".");
  CANDELA_CHECK(std::isfinite(epsilon) && epsilon >= 0, "epsilon must be >= 0, got ", epsilon, ".");
  CANDELA_CHECK(std::isfinite(stabilizer) && stabilizer >= 0, "stabilizer must be >= 0, got ", stabilizer, ".");
  CANDELA_CHECK(std::isfinite(gamma) && gamma >= 0, "gamma must be >= 0, got ", gamma, ".");
  const unsigned p = row->info.params;
  if (p & kLrpAlphaBeta)
    CANDELA_CHECK(alpha >= 0 && beta >= 0 && std::abs(alpha - beta - 1.0) < 1e-12,
                  "the alpha-beta rule needs alpha - beta = 1 with both >= 0 (conservation), got alpha ", alpha,
                  ", beta ", beta, ".");
  if (p & kLrpBounds) {
    CANDELA_CHECK(!low.empty() && low.size() == high.size(), "the ", name,
                  " rule needs bounds: give low and high (one value, or one per input channel), or an input spec "
                  "with a range (and mean/std) to derive them from.");
    for (size_t i = 0; i < low.size(); ++i)
      CANDELA_CHECK(std::isfinite(low[i]) && std::isfinite(high[i]) && low[i] <= high[i], name,
                    " bounds need low <= high, got low ", low[i], ", high ", high[i], ".");
  }
}

nlohmann::json LrpRule::parameters() const {
  nlohmann::json j = nlohmann::json::object();
  const RuleRow* row = find_rule(name);
  const unsigned p = row ? row->info.params : 0;
  if (p & kLrpEpsilon) j["epsilon"] = epsilon;
  if (p & kLrpStabilizer) j["stabilizer"] = stabilizer;
  if (p & kLrpGamma) j["gamma"] = gamma;
  if (p & kLrpAlphaBeta) j["alpha"] = alpha, j["beta"] = beta;
  if (p & kLrpBounds) j["low"] = low, j["high"] = high;
  if (zero_bias) j["zero_bias"] = true;
  return j;
}

// ---- composites ------------------------------------------------------------------------

const std::vector<std::string>& Composite::builtin_names() {
  static const std::vector<std::string> n = [] {
    std::vector<std::string> v;
    for (const auto& c : builtin_composites()) v.push_back(c.name);
    return v;
  }();
  return n;
}

Composite Composite::builtin(const std::string& name, const LrpRule& defaults) {
  for (const auto& row : builtin_composites())
    if (name == row.name) return {name, row.entries(defaults)};
  throw InvalidArgument(str_cat("unknown composite '", name, "'.", did_you_mean(name, builtin_names()),
                                " Composites: ", join_names(builtin_names()), ", or a JSON file."));
}

Composite Composite::uniform(const LrpRule& rule) {
  return {"uniform:" + rule.name, {entry("affine", LrpRule::named(rule.name, rule))}};
}

Composite Composite::from_json(const nlohmann::json& j, const LrpRule& defaults, const std::string& source) {
  CANDELA_CHECK_T(ParseError, j.is_object() && j.contains("rules") && j["rules"].is_array(), source,
                  ": a composite is {\"name\": ..., \"rules\": [{\"type\": \"conv\", \"rule\": \"gamma\"}, ...]}.");
  CANDELA_CHECK_T(ParseError, !j.contains("name") || j["name"].is_string(), source,
                  ": the composite's \"name\" must be a string, got ", j.contains("name") ? j["name"].dump() : "", ".");
  Composite c;
  c.name = j.value("name", source);
  static const std::set<std::string> keys = {"type", "path", "first", "rule", "epsilon", "stabilizer", "gamma",
                                             "alpha", "beta", "zero_bias", "low", "high"};
  for (const auto& e : j["rules"]) {
    CANDELA_CHECK_T(ParseError, e.is_object(), source, ": each entry of \"rules\" is an object.");
    for (const auto& [k, v] : e.items())
      CANDELA_CHECK_T(ParseError, keys.count(k), source, ": unknown key '", k, "' in a composite entry.",
                      did_you_mean(k, std::vector<std::string>(keys.begin(), keys.end())));
    CANDELA_CHECK_T(ParseError, e.contains("rule") && e["rule"].is_string(), source, ": every entry needs \"rule\".");
    try {
      CompositeEntry ce;
      ce.type = e.value("type", std::string("affine"));
      CANDELA_CHECK(ce.type == "conv" || ce.type == "linear" || ce.type == "affine", "type must be conv, linear or "
                    "affine, got '", ce.type, "'.");
      ce.path = e.value("path", std::string());
      ce.first = e.value("first", false);
      ce.rule = LrpRule::named(e["rule"].get<std::string>(), defaults);
      ce.rule.epsilon = e.value("epsilon", ce.rule.epsilon);
      ce.rule.stabilizer = e.value("stabilizer", ce.rule.stabilizer);
      ce.rule.gamma = e.value("gamma", ce.rule.gamma);
      ce.rule.alpha = e.value("alpha", ce.rule.alpha);
      ce.rule.beta = e.value("beta", ce.rule.beta);
      ce.rule.zero_bias = e.value("zero_bias", ce.rule.zero_bias);
      auto bounds = [&](const char* key, std::vector<double>& out) {
        if (!e.contains(key)) return;
        out = e[key].is_array() ? e[key].get<std::vector<double>>() : std::vector<double>{e[key].get<double>()};
      };
      bounds("low", ce.rule.low);
      bounds("high", ce.rule.high);
      ce.rule.validate();
      c.entries.push_back(ce);
    } catch (const nlohmann::json::exception& ex) {
      throw ParseError(str_cat(source, ": a composite entry has a value of the wrong type (", ex.what(), ")."));
    } catch (const InvalidArgument& ex) {
      throw InvalidArgument(str_cat(source, ": ", ex.what()));
    }
  }
  CANDELA_CHECK(!c.entries.empty(), source, ": the composite has no rules.");
  return c;
}

nlohmann::json Composite::to_json() const {
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& e : entries) {
    nlohmann::json r = {{"type", e.type}, {"rule", e.rule.name}};
    if (!e.path.empty()) r["path"] = e.path;
    if (e.first) r["first"] = true;
    r.update(e.rule.parameters());
    rules.push_back(r);
  }
  return {{"name", name}, {"rules", rules}};
}

Composite resolve_composite(const std::string& name_or_file, const LrpRule& defaults, bool check_only) {
  const auto& names = Composite::builtin_names();
  if (std::find(names.begin(), names.end(), name_or_file) != names.end())
    return Composite::builtin(name_or_file, defaults);
  const bool looks_like_file = name_or_file.find('/') != std::string::npos ||
                               (name_or_file.size() > 5 && name_or_file.substr(name_or_file.size() - 5) == ".json");
  if (!looks_like_file) return Composite::builtin(name_or_file, defaults);  // unknown name: its error
  if (check_only) return {};
  const std::string text = read_file(name_or_file, 1 << 20);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat(name_or_file, ": not valid JSON (", e.what(), ")."));
  }
  return Composite::from_json(j, defaults, name_or_file);
}

}  // namespace candela
