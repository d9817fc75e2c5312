// ONNX import (not public API): an .onnx file becomes a TorchScript module whose forward()
// runs the graph as ATen ops, so every method (gradients, taps, rule graphs) works on it as on
// a .pt file. Each ONNX node is a submodule named after the node (or its first output),
// sanitised to an identifier, whose class is the operator ("Conv", "Gemm"): `--layer` and LRP
// composites see ONNX layers by those names and types. Initializers are the submodules'
// parameters (floating) or buffers.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/script.h>

#include <string>
#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

struct OnnxImport {
  torch::jit::Module module;
  InputSpec spec;                       // shape and a layout guess from the graph's input
  std::vector<std::string> inputs;      // graph inputs that are not initializers
  std::vector<std::string> outputs;
  int64_t opset = 0;
  std::string source;                   // the generated TorchScript, for debugging
};

// Parses, checks (onnx::checker, shape inference) and converts. A malformed or hostile file,
// an unsupported operator or opset, or unsafe external data is an error that names the
// problem: ParseError, UnsupportedModel, IoError. With single_output, forward() returns the
// first graph output only (what explanations need).
OnnxImport import_onnx(const std::string& path, bool single_output = true);
// The same from bytes; external data is resolved against `folder`.
OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& folder, const std::string& name,
                             bool single_output = true);

// A TensorProto file (the ONNX test data's input_*.pb / output_*.pb) as a tensor.
at::Tensor read_onnx_tensor(const std::string& path);

// The ONNX operators the importer converts, sorted: the keys of its operator table (emit.h).
// docs/onnx.md lists them, and a unit test keeps the two equal.
std::vector<std::string> supported_onnx_ops();

}  // namespace candela::detail
