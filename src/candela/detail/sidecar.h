// The model.json sidecar that describes a model file's input, classes and output.
#pragma once

#include <string>
#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

struct Sidecar {
  InputSpec spec;
  std::vector<std::string> classes, features;
  std::string output_kind = "logits";
};

// Parses a sidecar's text; a ParseError names `source` and what was expected.
Sidecar parse_sidecar(const std::string& text, const std::string& source);

}  // namespace candela::detail
