// Reading a TorchScript forward graph by module path (not public API).
#pragma once

#include <torch/script.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "candela/core/model.h"

namespace candela::detail {

// Captum's additional_forward_args as a Model holds them (Model::with_forward_args).
using ForwardArgs = std::vector<std::pair<std::string, at::Tensor>>;

// The given arguments for a call on `rows` rows, on `device`: a [1, ...] value broadcast to every
// row, a [rows, ...] value as it is; any other row count is an error naming the argument.
std::vector<c10::IValue> given_forward_args(const ForwardArgs& args, int64_t rows, const c10::Device& device);
// Every parameter of `model`'s forward() after the input, for a call on `rows` rows: the given
// values as above, the others their defaults (an error names a parameter that has none).
std::vector<c10::IValue> all_forward_args(const Model& model, int64_t rows, const c10::Device& device);
// Specialises a copy of `model`'s forward graph (inputs: self, the input, then every parameter)
// on the arguments the model was given: each other parameter becomes its default constant, each
// given one a tensor, and `is None` tests on them and the branches they choose fold away. The
// graph's inputs are then self, the input and the given arguments in order: what
// given_forward_args supplies.
void specialise_forward_args(std::shared_ptr<torch::jit::Graph> graph, const Model& model);

// Every value a node reads, including those its nested blocks read from outside (appended to `out`).
void free_inputs(torch::jit::Node* node, std::vector<torch::jit::Value*>& out);

// "layer1.0.conv1" for a node inlined from that submodule's forward, "" for top-level code.
std::string module_path(const torch::jit::Node* node);
// The class name of the innermost module the node came from ("Conv2d"), or "".
std::string module_type(const torch::jit::Node* node);

// The forward graph of `module`, copied, inlined and free of in-place tensor mutation, so
// values can be read, replaced and cut without an in-place op changing them behind a tap.
std::shared_ptr<torch::jit::Graph> inlined_forward(const torch::jit::Module& module);

// Each module's output in an inlined graph: the last value its scope computes in the graph's
// top-level block (a module and every enclosing one are credited; parents listed first).
struct LayerOutputs {
  std::vector<std::string> order;
  std::map<std::string, torch::jit::Value*> value;  // may be a non-tensor value
  std::map<std::string, std::string> type;
  std::map<std::string, int> calls;                 // times the module's forward runs
  std::set<std::string> nested_only;                // paths seen only inside branches or loops
  std::vector<torch::jit::Value*> tensors;          // every top-level tensor value, in order
};
LayerOutputs layer_outputs(torch::jit::Graph& graph);

// A candela::tap(slot) after `layer`'s output in an inlined graph (a rule graph's, before its
// rewrite; the rewrite passes it through as a structural op). Errors name the layer as LayerTaps does.
void insert_tap(torch::jit::Graph& graph, const std::string& layer, int64_t slot);
// Runs `call` with a tap context of `slots` slots on this thread and returns what the taps
// recorded (each the tensor flowing into the tap, in the autograd graph).
std::vector<at::Tensor> record_taps(size_t slots, const std::function<void()>& call);

}  // namespace candela::detail
