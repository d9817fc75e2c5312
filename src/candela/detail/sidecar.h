// The model.json sidecar that describes a model file's input, classes and output.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

struct Sidecar {
  InputSpec spec;
  std::vector<std::string> classes, features;
  std::string output_kind = "logits";
  nlohmann::json tokenizer;  // the "tokenizer" object as written (text/tokenizer.h), or null
};

// Parses a sidecar's text; a ParseError names `source` and what was expected.
Sidecar parse_sidecar(const std::string& text, const std::string& source);

}  // namespace candela::detail
