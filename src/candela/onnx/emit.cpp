// What every emitter shares: TorchScript text, node attributes, the per-node context (Emit) and
// the operator table built from the families' ops_*.cpp.
#include "emit.h"

#include <onnx/onnx_pb.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <iomanip>

#include "importer.h"

namespace candela::detail {
namespace onnx_import {

std::string ints(const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  s << "]";
  return s.str();
}

std::string num(double v) {
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  std::ostringstream s;
  s << std::setprecision(17) << v;
  std::string r = s.str();
  if (r.find_first_of(".e") == std::string::npos && r.find("inf") == std::string::npos &&
      r.find("nan") == std::string::npos)
    r += ".0";
  return r;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

std::string dtype_name(at::ScalarType t) { return std::to_string(static_cast<int>(t)); }

// ---- Attr ----------------------------------------------------------------------------------

const onnx::AttributeProto* Attr::find(const std::string& k) const {
  for (const auto& a : node.attribute())
    if (a.name() == k) return &a;
  return nullptr;
}
int64_t Attr::i(const std::string& k, int64_t d) const {
  auto* a = find(k);
  return a ? a->i() : d;
}
double Attr::f(const std::string& k, double d) const {
  auto* a = find(k);
  return a ? a->f() : d;
}
std::string Attr::s(const std::string& k, const std::string& d) const {
  auto* a = find(k);
  return a ? a->s() : d;
}
std::vector<int64_t> Attr::is(const std::string& k, std::vector<int64_t> d) const {
  auto* a = find(k);
  return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : d;
}
std::vector<double> Attr::fs(const std::string& k) const {
  auto* a = find(k);
  return a ? std::vector<double>(a->floats().begin(), a->floats().end()) : std::vector<double>();
}

// ---- Emit ----------------------------------------------------------------------------------

Emit::Emit(const GraphValues& graph, const onnx::NodeProto& node, const std::vector<std::string>& in)
    : a{node}, in(in), opset(graph.opset), graph_(graph), node_(node) {}

const std::string& Emit::op() const { return node_.op_type(); }
const std::string& Emit::name() const { return node_.name(); }
int Emit::outputs() const { return node_.output_size(); }
const std::string& Emit::output(int k) const { return node_.output(k); }

bool Emit::is_const(int k) const {
  return k < node_.input_size() && !node_.input(k).empty() && graph_.constants.count(node_.input(k));
}
const at::Tensor& Emit::const_at(int k) const { return graph_.constants.at(node_.input(k)); }
std::vector<int64_t> Emit::const_ints(int k) const {
  const at::Tensor t = const_at(k).to(at::kLong).reshape({-1}).contiguous();
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

std::string Emit::list_input(int k) {
  if (is_const(k)) return ints(const_ints(k));
  const std::string v = "l" + std::to_string(k);
  pre << "    " << v << ": List[int] = " << in[k] << ".tolist()\n";
  return v;
}

int64_t Emit::rank_of(int k) const {
  auto it = graph_.shapes.find(node_.input(k));
  if (it != graph_.shapes.end()) return static_cast<int64_t>(it->second.size());
  if (is_const(k)) return const_at(k).dim();
  return -1;
}
std::vector<int64_t> Emit::shape_of(int k) const {
  auto it = graph_.shapes.find(node_.input(k));
  if (it != graph_.shapes.end()) return it->second;
  if (is_const(k)) return const_at(k).sizes().vec();
  return {};
}
bool Emit::is_integer(int k) const {
  if (is_const(k)) return !at::isFloatingType(const_at(k).scalar_type());
  auto it = graph_.types.find(node_.input(k));
  if (it == graph_.types.end()) return false;
  const int32_t t = it->second;
  using TP = onnx::TensorProto;
  return t == TP::INT64 || t == TP::INT32 || t == TP::INT16 || t == TP::INT8 || t == TP::UINT8 || t == TP::UINT16 ||
         t == TP::UINT32 || t == TP::UINT64;
}

at::Tensor Emit::tensor_attr(const std::string& k) const { return tensor_from_proto(a.find(k)->t(), graph_.folder); }

void Emit::replace_const(int k, const at::Tensor& value) { pending.emplace_back("c" + std::to_string(k), value); }

void Emit::unsupported(const std::string& why) const {
  throw UnsupportedModel(str_cat("ONNX operator ", node_.op_type(), " (node '", node_.name(), "', opset ", opset,
                                 ") is not supported", why.empty() ? "" : ": " + why,
                                 ". Candela imports the common layers of image and tabular models; see `candela "
                                 "info` on a supported model, or re-export without this operator."));
}

void Emit::check_len(const std::vector<int64_t>& v, size_t n, const char* attr) const {
  if (v.size() != n)
    throw ParseError(str_cat("ONNX ", node_.op_type(), " node '", node_.name(), "': attribute '", attr, "' has ",
                             v.size(), " values where ", n, " are expected."));
}

std::vector<int64_t> Emit::conv_pads(int64_t dims, const std::vector<int64_t>& kernel,
                                     const std::vector<int64_t>& strides, const std::vector<int64_t>& dil) const {
  const std::string ap = a.s("auto_pad", "NOTSET");
  check_len(kernel, static_cast<size_t>(dims), "kernel_shape");
  check_len(strides, static_cast<size_t>(dims), "strides");
  check_len(dil, static_cast<size_t>(dims), "dilations");
  if (ap == "NOTSET") {
    auto p = a.is("pads");
    if (p.empty()) p.assign(2 * dims, 0);
    check_len(p, static_cast<size_t>(2 * dims), "pads");
    return p;
  }
  if (ap == "VALID") return std::vector<int64_t>(2 * dims, 0);
  const auto shape = shape_of(0);
  std::vector<int64_t> p(2 * dims, 0);
  for (int64_t d = 0; d < dims; ++d) {
    const int64_t size = shape.size() == static_cast<size_t>(dims + 2) ? shape[d + 2] : -1;
    if (size <= 0) unsupported("auto_pad " + ap + " needs the input's spatial size, which shape inference left open");
    const int64_t out = (size + strides[d] - 1) / strides[d];
    const int64_t need = std::max<int64_t>(0, (out - 1) * strides[d] + (kernel[d] - 1) * dil[d] + 1 - size);
    p[d] = ap == "SAME_UPPER" ? need / 2 : need - need / 2;
    p[d + dims] = need - p[d];
  }
  return p;
}

std::string Emit::pad_if_asymmetric(const std::string& x, const std::vector<int64_t>& pads, int64_t dims,
                                    std::vector<int64_t>& sym, const std::string& value) {
  bool symmetric = true;
  for (int64_t d = 0; d < dims; ++d) symmetric &= pads[d] == pads[d + dims];
  if (symmetric) {
    sym.assign(pads.begin(), pads.begin() + dims);
    return x;
  }
  std::vector<int64_t> tp;
  for (int64_t d = dims - 1; d >= 0; --d) tp.push_back(pads[d]), tp.push_back(pads[d + dims]);
  sym.assign(dims, 0);
  pre << "    xp = torch.constant_pad_nd(" << x << ", " << ints(tp) << ", " << value << ")\n";
  return "xp";
}

// ---- the table -----------------------------------------------------------------------------

const OpTable& op_table() {
  static const OpTable table = [] {
    OpTable t;
    add_elementwise_ops(t);
    add_nn_ops(t);
    add_shape_ops(t);
    add_reduce_ops(t);
    return t;
  }();
  return table;
}

}  // namespace onnx_import

std::vector<std::string> supported_onnx_ops() {
  std::vector<std::string> ops;
  for (const auto& [op, emitter] : onnx_import::op_table().ops) ops.push_back(op);
  // Constant nodes become values (folded into the nodes that read them), not submodules, so
  // the converter takes them before the table.
  ops.push_back("Constant");
  std::sort(ops.begin(), ops.end());
  return ops;
}

}  // namespace candela::detail
