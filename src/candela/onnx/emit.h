// The ONNX importer's operator table (private to src/candela/onnx). Each operator Candela imports
// maps to an emitter: a function that turns one node into the TorchScript expression its
// submodule's forward() returns, given the node's inputs as expressions. The converter
// (importer.cpp) walks the graph and looks every node up here; an operator missing from the
// table is unsupported, and the table's keys are the documented list (supported_onnx_ops(),
// docs/onnx.md). The emitters live by family in ops_{elementwise,nn,shape,reduce}.cpp.
//
// The protobuf types are only declared here, so the table can be used without them.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "candela/core/error.h"

namespace onnx {
class AttributeProto;
class NodeProto;
class TensorProto;
}  // namespace onnx

namespace candela::detail::onnx_import {

// ---- TorchScript text ----------------------------------------------------------------------

std::string ints(const std::vector<int64_t>& v);      // [1, 2, 3]
std::string num(double v);                            // a float literal: 1.0, 1e-05, float('inf')
std::string join(const std::vector<std::string>& v);  // a, b, c
// TorchScript's C++ front end has no `torch.float32`: a dtype is its ScalarType code.
std::string dtype_name(at::ScalarType t);

// ---- tensors (importer.cpp) ----------------------------------------------------------------

// An ONNX element type as a LibTorch dtype; `what` names the tensor in the error.
at::ScalarType scalar_type(int32_t onnx_type, const std::string& what);
// External data is resolved against `folder`.
at::Tensor tensor_from_proto(const onnx::TensorProto& t, const std::string& folder);

// ---- what an emitter sees ------------------------------------------------------------------

// A node's attributes; the getters take the operator's default.
struct Attr {
  const onnx::NodeProto& node;
  const onnx::AttributeProto* find(const std::string& k) const;
  int64_t i(const std::string& k, int64_t d) const;
  double f(const std::string& k, double d) const;
  std::string s(const std::string& k, const std::string& d) const;
  std::vector<int64_t> is(const std::string& k, std::vector<int64_t> d = {}) const;
  std::vector<double> fs(const std::string& k) const;  // empty when absent
  bool has(const std::string& k) const { return find(k) != nullptr; }
};

// What the converter knows of the graph's values when it reaches a node.
struct GraphValues {
  std::string folder;                                  // the model's folder, for external data
  int64_t opset = 0;                                   // of the default domain
  std::map<std::string, at::Tensor> constants;         // initializers and Constant nodes' values
  std::map<std::string, std::vector<int64_t>> shapes;  // from shape inference; -1: unknown dimension
  std::map<std::string, int32_t> types;                // ONNX element types
};

// One node being converted. An emitter returns the expression; statements it needs first go to
// `pre` (indented by four spaces), and constants it needs in another layout to `pending`.
class Emit {
 public:
  Emit(const GraphValues& graph, const onnx::NodeProto& node, const std::vector<std::string>& in);

  const Attr a;
  const std::vector<std::string>& in;  // the inputs as expressions; "" for an omitted optional input
  const int64_t opset;
  std::ostringstream pre;
  std::vector<std::pair<std::string, at::Tensor>> pending;  // parameters that replace the node's constants

  const std::string& op() const;
  const std::string& name() const;
  int outputs() const;
  const std::string& output(int k) const;

  const std::string& x(int k) const { return in.at(k); }
  bool has(int k) const { return k < static_cast<int>(in.size()) && !in[k].empty(); }
  // Constant inputs are the submodule's state (self.c<k>); their values are known here.
  bool is_const(int k) const;
  const at::Tensor& const_at(int k) const;
  std::vector<int64_t> const_ints(int k) const;
  // An int-list input: the constant's literal, or the run-time tensor's values.
  std::string list_input(int k);
  // From shape inference or the constant; -1 / {} / false when unknown.
  int64_t rank_of(int k) const;
  std::vector<int64_t> shape_of(int k) const;
  bool is_integer(int k) const;
  at::Tensor tensor_attr(const std::string& k) const;  // a TENSOR attribute's value
  // Re-registers constant input k (self.c<k>) in the layout the emitted op needs, e.g. a
  // MatMul's weight transposed for linear.
  void replace_const(int k, const at::Tensor& value);

  [[noreturn]] void unsupported(const std::string& why = "") const;
  // An attribute list must have the length the operator implies (the checker does not say so).
  void check_len(const std::vector<int64_t>& v, size_t n, const char* attr) const;
  // Pads [b1.., e1..] (ONNX order) for `dims` spatial dims, resolving auto_pad from the input's
  // static spatial size.
  std::vector<int64_t> conv_pads(int64_t dims, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                                 const std::vector<int64_t>& dil) const;
  // Symmetric pads as a list, or an explicit pad before the op (returns the padded input).
  std::string pad_if_asymmetric(const std::string& x, const std::vector<int64_t>& pads, int64_t dims,
                                std::vector<int64_t>& sym, const std::string& value);

 private:
  const GraphValues& graph_;
  const onnx::NodeProto& node_;
};

// ---- the table -----------------------------------------------------------------------------

using Emitter = std::string (*)(Emit&);

struct OpTable {
  std::map<std::string, Emitter> ops;
  // Adding an operator twice is a bug in the ops_*.cpp files, not in the model.
  void add(const std::string& op, Emitter emitter) {
    const bool added = ops.emplace(op, emitter).second;
    CANDELA_ASSERT(added, "ONNX operator '", op, "' is registered twice.");
  }
};

// Every family's operators, built once.
const OpTable& op_table();

void add_elementwise_ops(OpTable& t);
void add_nn_ops(OpTable& t);
void add_shape_ops(OpTable& t);
void add_reduce_ops(OpTable& t);

}  // namespace candela::detail::onnx_import
