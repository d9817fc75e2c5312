#include "importer.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <ATen/ATen.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iomanip>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"

namespace candela::detail {
namespace fs = std::filesystem;

namespace {

std::string first_line(const std::string& s) {
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

constexpr int64_t kMaxElements = int64_t{1} << 31;  // 8 GB of floats: refuse anything larger
constexpr int64_t kMaxFileBytes = int64_t{4} << 30;

// ---- tensors -------------------------------------------------------------------------------

at::ScalarType scalar_type(int32_t t, const std::string& what) {
  using TP = onnx::TensorProto;
  switch (t) {
    case TP::FLOAT: return at::kFloat;
    case TP::DOUBLE: return at::kDouble;
    case TP::FLOAT16: return at::kHalf;
    case TP::INT64: return at::kLong;
    case TP::INT32: return at::kInt;
    case TP::INT16: return at::kShort;
    case TP::INT8: return at::kChar;
    case TP::UINT8: return at::kByte;
    case TP::BOOL: return at::kBool;
    default:
      throw UnsupportedModel(str_cat("ONNX tensor '", what, "' has data type ", t,
                                     ", which Candela does not import (float, double, half, int8-64, uint8, bool)."));
  }
}

std::vector<int64_t> checked_dims(const google::protobuf::RepeatedField<int64_t>& d, const std::string& what) {
  std::vector<int64_t> dims(d.begin(), d.end());
  int64_t n = 1;
  for (int64_t v : dims) {
    CANDELA_CHECK_T(ParseError, v >= 0 && v <= kMaxElements, "ONNX tensor '", what, "' has an invalid dimension ", v, ".");
    CANDELA_CHECK_T(ParseError, v == 0 || n <= kMaxElements / v, "ONNX tensor '", what,
                    "' is absurdly large (more than 2^31 elements).");
    n *= v;
  }
  return dims;
}

// The file holding a tensor's external data: next to the model, never outside its folder.
fs::path external_file(const onnx::TensorProto& t, const std::string& folder) {
  const std::string& name = t.name();
  std::string location;
  for (const auto& kv : t.external_data())
    if (kv.key() == "location") location = kv.value();
  CANDELA_CHECK_T(ParseError, !location.empty(), "ONNX tensor '", name, "' refers to external data without a location.");
  const fs::path rel(location);
  CANDELA_CHECK_T(UnsupportedModel, rel.is_relative() && location.find("..") == std::string::npos, "ONNX tensor '",
                  name, "' refers to external data '", location,
                  "' outside the model's folder; external data must sit next to the model.");
  const fs::path file = fs::path(folder) / rel;
  std::error_code ec;
  CANDELA_CHECK_T(IoError, fs::is_regular_file(file, ec), "ONNX tensor '", name, "': its external data file '",
                  file.string(), "' is missing. Keep it next to the model.");
  return file;
}

at::Tensor tensor_from_proto(const onnx::TensorProto& t, const std::string& folder) {
  const std::string& name = t.name();
  const at::ScalarType st = scalar_type(t.data_type(), name);
  const std::vector<int64_t> dims = checked_dims(t.dims(), name);
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  const auto opts = at::TensorOptions().dtype(st);
  const int64_t bytes = numel * static_cast<int64_t>(c10::elementSize(st));
  auto from_bytes = [&](const char* data, size_t size) {
    CANDELA_CHECK_T(ParseError, static_cast<int64_t>(size) == bytes, "ONNX tensor '", name, "' holds ", size,
                    " bytes of data for shape ", shape_str(dims), " (", bytes, " expected).");
    at::Tensor out = at::empty(dims, opts);
    if (bytes > 0) std::memcpy(out.data_ptr(), data, size);
    return out;
  };
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    std::string location;
    int64_t offset = 0, length = -1;
    for (const auto& kv : t.external_data()) {
      if (kv.key() == "location") location = kv.value();
      try {
        if (kv.key() == "offset") offset = std::stoll(kv.value());
        if (kv.key() == "length") length = std::stoll(kv.value());
      } catch (const std::exception&) {
        throw ParseError(str_cat("ONNX tensor '", name, "' has an external data ", kv.key(), " that is not a number."));
      }
    }
    const fs::path file = external_file(t, folder);
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(file, ec));
    if (length < 0) length = bytes;
    CANDELA_CHECK_T(ParseError, offset >= 0 && length == bytes && offset + length <= size, "ONNX tensor '", name,
                    "': its external data (offset ", offset, ", length ", length, ") does not fit '", file.string(),
                    "' (", size, " bytes) or its shape.");
    std::ifstream in(file, std::ios::binary);
    in.seekg(offset);
    std::string buf(static_cast<size_t>(length), '\0');
    in.read(buf.data(), length);
    CANDELA_CHECK_T(IoError, in.good(), "cannot read the external data of ONNX tensor '", name, "'.");
    return from_bytes(buf.data(), buf.size());
  }
  if (!t.raw_data().empty()) return from_bytes(t.raw_data().data(), t.raw_data().size());
  auto typed = [&](auto begin, auto end, at::ScalarType src) {
    const auto count = static_cast<int64_t>(std::distance(begin, end));
    CANDELA_CHECK_T(ParseError, count == numel, "ONNX tensor '", name, "' has ", count, " values for shape ",
                    shape_str(dims), ".");
    using T = typename std::iterator_traits<decltype(begin)>::value_type;
    std::vector<T> v(begin, end);
    return at::from_blob(v.data(), {count}, at::TensorOptions().dtype(src)).clone().view(dims).to(st);
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT: return typed(t.float_data().begin(), t.float_data().end(), at::kFloat);
    case onnx::TensorProto::DOUBLE: return typed(t.double_data().begin(), t.double_data().end(), at::kDouble);
    case onnx::TensorProto::INT64: return typed(t.int64_data().begin(), t.int64_data().end(), at::kLong);
    case onnx::TensorProto::FLOAT16: {
      // int32_data holds the raw 16-bit patterns.
      std::vector<int16_t> v(t.int32_data().begin(), t.int32_data().end());
      CANDELA_CHECK_T(ParseError, static_cast<int64_t>(v.size()) == numel, "ONNX tensor '", name, "' size mismatch.");
      return at::from_blob(v.data(), dims, at::TensorOptions().dtype(at::kShort)).clone().view(at::kHalf);
    }
    default: return typed(t.int32_data().begin(), t.int32_data().end(), at::kInt);
  }
}

// ---- code generation -------------------------------------------------------------------------

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  while (!out.empty() && out.front() == '_') out.erase(out.begin());
  if (out.empty() || std::isdigit(static_cast<unsigned char>(out.front()))) out = "n" + out;
  static const std::set<std::string> reserved = {"forward", "training", "self", "None", "True", "False", "and", "or",
                                                 "not", "if", "else", "for", "in", "def", "return", "pass"};
  if (reserved.count(out)) out += "_";
  return out;
}

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
  if (r.find_first_of(".e") == std::string::npos && r.find("inf") == std::string::npos && r.find("nan") == std::string::npos)
    r += ".0";
  return r;
}

// TorchScript's C++ front end has no `torch.float32`: a dtype is its ScalarType code.
std::string dtype_name(at::ScalarType t) { return std::to_string(static_cast<int>(t)); }

struct Attr {
  const onnx::NodeProto& node;
  const onnx::AttributeProto* find(const std::string& k) const {
    for (const auto& a : node.attribute())
      if (a.name() == k) return &a;
    return nullptr;
  }
  int64_t i(const std::string& k, int64_t d) const {
    auto* a = find(k);
    return a ? a->i() : d;
  }
  double f(const std::string& k, double d) const {
    auto* a = find(k);
    return a ? a->f() : d;
  }
  std::string s(const std::string& k, const std::string& d) const {
    auto* a = find(k);
    return a ? a->s() : d;
  }
  std::vector<int64_t> is(const std::string& k, std::vector<int64_t> d = {}) const {
    auto* a = find(k);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : d;
  }
  bool has(const std::string& k) const { return find(k) != nullptr; }
};

class Converter {
 public:
  Converter(const onnx::ModelProto& model, std::string folder, bool single_output)
      : model_(model), folder_(std::move(folder)), single_output_(single_output) {}

  OnnxImport run() {
    const auto& g = model_.graph();
    for (const auto& op : model_.opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") opset_ = op.version();
    CANDELA_CHECK_T(UnsupportedModel, opset_ >= 1 && opset_ <= 18, "the model uses ONNX opset ", opset_,
                    "; Candela imports opsets up to 18. Convert it with onnx.version_converter.");
    for (const auto& t : g.initializer()) constants_[t.name()] = tensor_from_proto(t, folder_);
    for (const auto& vi : g.value_info()) record_shape(vi);
    for (const auto& vi : g.input()) record_shape(vi);
    for (const auto& vi : g.output()) record_shape(vi);
    OnnxImport out;
    out.opset = opset_;
    std::vector<std::string> args;
    for (const auto& in : g.input()) {
      if (constants_.count(in.name())) continue;
      out.inputs.push_back(in.name());
      const std::string v = var(in.name());
      defined_.insert(in.name());
      args.push_back(v + ": Tensor");
    }
    CANDELA_CHECK_T(UnsupportedModel, !out.inputs.empty(), "the ONNX graph has no input besides its initializers.");
    torch::jit::Module root("OnnxModel");
    std::ostringstream body;
    std::set<std::string> used_names;
    for (int ni = 0; ni < g.node_size(); ++ni) {
      const auto& node = g.node(ni);
      const std::string& op = node.op_type();
      CANDELA_CHECK_T(UnsupportedModel, node.domain().empty() || node.domain() == "ai.onnx", "ONNX operator ",
                      node.domain(), "::", op, " (node '", node.name(), "') is from a custom domain; Candela imports "
                      "the standard operators only.");
      if (op == "Constant") {
        const std::string name = node.output(0);
        constants_[name] = constant_value(node);
        continue;
      }
      // Inputs: computed values are arguments of the node's submodule; constants its state.
      torch::jit::Module sub{c10::QualifiedName(op)};
      std::vector<std::string> in_expr, sub_args, call_args;
      for (int k = 0; k < node.input_size(); ++k) {
        const std::string& iname = node.input(k);
        if (iname.empty()) {
          in_expr.push_back("");
          continue;
        }
        if (constants_.count(iname)) {
          const std::string p = "c" + std::to_string(k);
          const at::Tensor& t = constants_.at(iname);
          if (at::isFloatingType(t.scalar_type())) sub.register_parameter(p, t, false);
          else sub.register_buffer(p, t);
          in_expr.push_back("self." + p);
          continue;
        }
        CANDELA_CHECK_T(UnsupportedModel, defined_.count(iname), "ONNX node '", node.name(), "' (", op, ") reads '",
                        iname, "' before any node computes it: the graph is not in topological order or has a "
                        "cycle.");
        const std::string a = "a" + std::to_string(k);
        sub_args.push_back(a + ": Tensor");
        call_args.push_back(var(iname));
        in_expr.push_back(a);
      }
      node_ = &node;
      const std::string expr = emit(node, in_expr);
      for (const auto& [pname, value] : take_pending()) sub.register_parameter(pname, value, false);
      std::ostringstream src;
      src << "def forward(self" << (sub_args.empty() ? "" : ", ");
      for (size_t k = 0; k < sub_args.size(); ++k) src << (k ? ", " : "") << sub_args[k];
      src << "):\n" << pre_.str() << "    return " << expr << "\n";
      pre_.str("");
      pre_.clear();
      try {
        sub.define(src.str());
      } catch (const std::exception& e) {
        throw UnsupportedModel(str_cat("ONNX node '", node.name(), "' (", op, ", opset ", opset_,
                                       ") could not be converted: ", torch_message(e), "\n", src.str()));
      }
      std::string name = sanitize(node.name().empty() ? node.output(0) : node.name());
      while (used_names.count(name)) name += "_";
      used_names.insert(name);
      root.register_module(name, sub);
      source_ << "# " << name << " (" << op << ")\n" << src.str();
      std::vector<std::string> outs;
      for (int k = 0; k < node.output_size(); ++k) {
        outs.push_back(node.output(k).empty() ? "_unused" + std::to_string(unused_++) : var(node.output(k)));
        defined_.insert(node.output(k));
      }
      body << "    " << (outs.size() == 1 ? outs[0] : join(outs) + (outs.size() == 1 ? "," : "")) << " = self." << name
           << ".forward(" << join(call_args) << ")\n";
    }
    std::vector<std::string> results;
    for (const auto& o : g.output()) {
      out.outputs.push_back(o.name());
      if (constants_.count(o.name()) && !defined_.count(o.name())) {
        root.register_buffer("out_" + sanitize(o.name()), constants_.at(o.name()));
        results.push_back("self.out_" + sanitize(o.name()));
      } else {
        CANDELA_CHECK_T(UnsupportedModel, defined_.count(o.name()), "the ONNX graph's output '", o.name(),
                        "' is never computed.");
        results.push_back(var(o.name()));
      }
    }
    CANDELA_CHECK_T(UnsupportedModel, !results.empty(), "the ONNX graph has no output.");
    std::ostringstream fwd;
    fwd << "def forward(self, " << join(args) << "):\n" << body.str() << "    return "
        << (single_output_ || results.size() == 1 ? results[0] : "(" + join(results) + ")") << "\n";
    try {
      root.define(fwd.str());
    } catch (const std::exception& e) {
      throw UnsupportedModel(str_cat("the converted ONNX graph did not compile: ", torch_message(e)));
    }
    root.eval();
    out.module = root;
    out.source = source_.str() + "# model\n" + fwd.str();
    // The input spec from the first input's static shape (batch dimension dropped).
    auto it = shapes_.find(out.inputs[0]);
    if (it != shapes_.end() && it->second.size() >= 2) {
      std::vector<int64_t> shape(it->second.begin() + 1, it->second.end());
      bool known = std::all_of(shape.begin(), shape.end(), [](int64_t d) { return d > 0; });
      if (known) {
        out.spec.shape = shape;
        if (shape.size() == 3) {
          const bool channels_last = (shape[2] == 1 || shape[2] == 3 || shape[2] == 4) && shape[0] > 4 && shape[1] > 4;
          out.spec.layout = channels_last ? "NHWC" : "NCHW";
        } else if (shape.size() == 1) {
          out.spec.layout = "NC";
        }
      }
    }
    return out;
  }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
    return s;
  }
  std::string var(const std::string& onnx_name) {
    auto it = vars_.find(onnx_name);
    if (it != vars_.end()) return it->second;
    const std::string v = "v" + std::to_string(vars_.size());
    vars_[onnx_name] = v;
    return v;
  }
  void record_shape(const onnx::ValueInfoProto& vi) {
    if (!vi.type().has_tensor_type()) return;
    const auto& tt = vi.type().tensor_type();
    types_[vi.name()] = tt.elem_type();
    if (!tt.has_shape()) return;
    std::vector<int64_t> dims;
    for (const auto& d : tt.shape().dim()) dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
    shapes_[vi.name()] = dims;
  }
  at::Tensor constant_value(const onnx::NodeProto& node) {
    Attr a{node};
    if (auto* v = a.find("value")) return tensor_from_proto(v->t(), folder_);
    if (auto* v = a.find("value_float")) return at::scalar_tensor(v->f(), at::kFloat);
    if (auto* v = a.find("value_int")) return at::scalar_tensor(v->i(), at::kLong);
    if (auto* v = a.find("value_floats")) return at::tensor(std::vector<float>(v->floats().begin(), v->floats().end()));
    if (auto* v = a.find("value_ints")) return at::tensor(std::vector<int64_t>(v->ints().begin(), v->ints().end()));
    throw UnsupportedModel(str_cat("ONNX Constant node '", node.name(), "' has no supported value attribute."));
  }
  bool is_const(int k) const {
    return k < node_->input_size() && !node_->input(k).empty() && constants_.count(node_->input(k));
  }
  const at::Tensor& const_at(int k) const { return constants_.at(node_->input(k)); }
  std::vector<int64_t> const_ints(int k) const {
    const at::Tensor t = const_at(k).to(at::kLong).reshape({-1}).contiguous();
    return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  // An int-list input: the constant's literal, or the runtime tensor's values.
  std::string list_input(int k, const std::vector<std::string>& in) {
    if (is_const(k)) return ints(const_ints(k));
    const std::string v = "l" + std::to_string(k);
    pre_ << "    " << v << ": List[int] = " << in[k] << ".tolist()\n";
    return v;
  }
  int64_t rank_of(int k) const {
    auto it = shapes_.find(node_->input(k));
    if (it != shapes_.end()) return static_cast<int64_t>(it->second.size());
    if (is_const(k)) return const_at(k).dim();
    return -1;
  }
  std::vector<int64_t> shape_of(int k) const {
    auto it = shapes_.find(node_->input(k));
    if (it != shapes_.end()) return it->second;
    if (is_const(k)) return const_at(k).sizes().vec();
    return {};
  }
  bool is_integer(int k) const {
    if (is_const(k)) return !at::isFloatingType(const_at(k).scalar_type());
    auto it = types_.find(node_->input(k));
    if (it == types_.end()) return false;
    const int32_t t = it->second;
    using TP = onnx::TensorProto;
    return t == TP::INT64 || t == TP::INT32 || t == TP::INT16 || t == TP::INT8 || t == TP::UINT8 || t == TP::UINT16 ||
           t == TP::UINT32 || t == TP::UINT64;
  }
  [[noreturn]] void unsupported(const std::string& why = "") const {
    throw UnsupportedModel(str_cat("ONNX operator ", node_->op_type(), " (node '", node_->name(), "', opset ", opset_,
                                   ") is not supported", why.empty() ? "" : ": " + why,
                                   ". Candela imports the common layers of image and tabular models; see `candela "
                                   "info` on a supported model, or re-export without this operator."));
  }

  // An attribute list must have the length the operator implies (the checker does not say so).
  void check_len(const std::vector<int64_t>& v, size_t n, const char* attr) const {
    if (v.size() != n)
      throw ParseError(str_cat("ONNX ", node_->op_type(), " node '", node_->name(), "': attribute '", attr, "' has ",
                               v.size(), " values where ", n, " are expected."));
  }

  // Pads [b1.., e1..] (ONNX order) for `dims` spatial dims, resolving auto_pad from the input's
  // static spatial size.
  std::vector<int64_t> conv_pads(const Attr& a, int64_t dims, const std::vector<int64_t>& kernel,
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
  // Symmetric pads as a list, or an explicit pad before the op (returns the padded input).
  std::string pad_if_asymmetric(const std::string& x, const std::vector<int64_t>& pads, int64_t dims,
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
    pre_ << "    xp = torch.constant_pad_nd(" << x << ", " << ints(tp) << ", " << value << ")\n";
    return "xp";
  }

  std::string reduce(const std::string& fn, const Attr& a, const std::vector<std::string>& in, bool axes_input) {
    const bool keep = a.i("keepdims", 1) != 0;
    std::string axes;
    if (axes_input) {
      if (in.size() > 1 && !in[1].empty()) {
        axes = list_input(1, in);
        if (!is_const(1)) {
          // Empty run-time axes: all of them, or nothing with noop_with_empty_axes.
          pre_ << "    ax: List[int] = " << axes << "\n    if len(ax) == 0:\n";
          if (a.i("noop_with_empty_axes", 0) != 0) pre_ << "        return " << in[0] << "\n";
          else pre_ << "        ax = [d for d in range(" << in[0] << ".dim())]\n";
          axes = "ax";
        }
      }
    } else if (a.has("axes")) {
      axes = ints(a.is("axes"));
    }
    if (axes.empty() || axes == "[]") {
      if (a.i("noop_with_empty_axes", 0) != 0) return in[0];
      axes = "[d for d in range(" + in[0] + ".dim())]";
    }
    const std::string k = keep ? "True" : "False";
    if (fn == "mean") return "torch.mean(" + in[0] + ", " + axes + ", " + k + ")";
    if (fn == "sum") return "torch.sum(" + in[0] + ", " + axes + ", " + k + ")";
    if (fn == "max") return "torch.amax(" + in[0] + ", " + axes + ", " + k + ")";
    if (fn == "min") return "torch.amin(" + in[0] + ", " + axes + ", " + k + ")";
    if (fn == "l2") return "torch.sqrt(torch.sum(" + in[0] + " * " + in[0] + ", " + axes + ", " + k + "))";
    if (fn == "l1") return "torch.sum(torch.abs(" + in[0] + "), " + axes + ", " + k + ")";
    if (fn == "prod") unsupported("ReduceProd");
    return "";
  }

  std::string emit(const onnx::NodeProto& node, const std::vector<std::string>& in) {
    const std::string& op = node.op_type();
    Attr a{node};
    auto x = [&](int k) -> const std::string& { return in.at(k); };
    auto has = [&](int k) { return k < static_cast<int>(in.size()) && !in[k].empty(); };
    static const std::map<std::string, std::string> unary = {
        {"Relu", "torch.relu"},   {"Sigmoid", "torch.sigmoid"}, {"Tanh", "torch.tanh"},   {"Exp", "torch.exp"},
        {"Log", "torch.log"},     {"Sqrt", "torch.sqrt"},       {"Neg", "torch.neg"},     {"Abs", "torch.abs"},
        {"Reciprocal", "torch.reciprocal"}, {"Erf", "torch.erf"}, {"Floor", "torch.floor"}, {"Ceil", "torch.ceil"},
        {"Sign", "torch.sign"},   {"Not", "torch.logical_not"}, {"Sin", "torch.sin"},     {"Cos", "torch.cos"}};
    if (op == "Softsign") return x(0) + " / (1 + torch.abs(" + x(0) + "))";
    if (unary.count(op)) return unary.at(op) + "(" + x(0) + ")";
    if (op == "Identity") return x(0);
    if (op == "Dropout") {
      if (node.output_size() > 1) return "(" + x(0) + ", torch.ones_like(" + x(0) + ").to(11))";
      return x(0);
    }
    if (opset_ < 7 && a.i("broadcast", 0) != 0 && a.has("axis"))
      unsupported("the legacy broadcast attribute with an axis (opset < 7)");
    if (op == "Reshape" && opset_ < 5) return "torch.reshape(" + x(0) + ", " + ints(a.is("shape")) + ")";
    static const std::map<std::string, std::string> binary = {
        {"Add", "torch.add"}, {"Sub", "torch.sub"}, {"Mul", "torch.mul"}, {"Pow", "torch.pow"},
        {"Equal", "torch.eq"}, {"Greater", "torch.gt"}, {"Less", "torch.lt"}, {"GreaterOrEqual", "torch.ge"},
        {"LessOrEqual", "torch.le"}, {"And", "torch.logical_and"}, {"Or", "torch.logical_or"},
        {"Xor", "torch.logical_xor"}, {"Max", "torch.maximum"}, {"Min", "torch.minimum"}};
    if (op == "Div") {
      if (is_integer(0) && is_integer(1)) return "torch.div(" + x(0) + ", " + x(1) + ", rounding_mode='trunc')";
      return "torch.div(" + x(0) + ", " + x(1) + ")";
    }
    if ((op == "Max" || op == "Min" || op == "Sum" || op == "Mean") && in.size() != 2) {
      if (in.size() == 1) return x(0);
      std::string acc = x(0);
      const std::string f = op == "Max" ? "torch.maximum" : op == "Min" ? "torch.minimum" : "torch.add";
      for (size_t k = 1; k < in.size(); ++k) acc = f + "(" + acc + ", " + in[k] + ")";
      return op == "Mean" ? acc + " / " + num(static_cast<double>(in.size())) : acc;
    }
    if (op == "Sum") return "torch.add(" + x(0) + ", " + x(1) + ")";
    if (op == "Mean") return "torch.add(" + x(0) + ", " + x(1) + ") / 2.0";
    if (binary.count(op)) return binary.at(op) + "(" + x(0) + ", " + x(1) + ")";
    if (op == "Mod") {
      if (a.i("fmod", 0)) return "torch.fmod(" + x(0) + ", " + x(1) + ")";
      return "torch.remainder(" + x(0) + ", " + x(1) + ")";
    }
    if (op == "Where") return "torch.where(" + x(0) + ", " + x(1) + ", " + x(2) + ")";
    if (op == "LeakyRelu") return "torch.leaky_relu(" + x(0) + ", " + num(a.f("alpha", 0.01)) + ")";
    if (op == "Elu") return "torch.elu(" + x(0) + ", " + num(a.f("alpha", 1.0)) + ")";
    if (op == "Celu") return "torch.celu(" + x(0) + ", " + num(a.f("alpha", 1.0)) + ")";
    if (op == "Selu") {
      const double alpha = a.f("alpha", 1.67326319217681884765625), gamma = a.f("gamma", 1.05070102214813232421875);
      return num(gamma) + " * torch.where(" + x(0) + " > 0, " + x(0) + ", " + num(alpha) + " * (torch.exp(" + x(0) +
             ") - 1))";
    }
    if (op == "PRelu") {
      // A per-channel slope [C] applies along dimension 1 (as PyTorch exports it).
      pre_ << "    sl = " << x(1) << "\n    if sl.dim() == 1 and " << x(0) << ".dim() > 2 and sl.size(0) == " << x(0)
           << ".size(1) and sl.size(0) > 1:\n        sl = sl.reshape([sl.size(0)] + [1 for d in range(" << x(0)
           << ".dim() - 2)])\n";
      return "torch.where(" + x(0) + " >= 0, " + x(0) + ", " + x(0) + " * sl)";
    }
    if (op == "ThresholdedRelu")
      return "torch.where(" + x(0) + " > " + num(a.f("alpha", 1.0)) + ", " + x(0) + ", torch.zeros_like(" + x(0) + "))";
    if (op == "HardSigmoid")
      return "torch.clamp(" + num(a.f("alpha", 0.2)) + " * " + x(0) + " + " + num(a.f("beta", 0.5)) + ", 0.0, 1.0)";
    if (op == "HardSwish") return "torch.hardswish(" + x(0) + ")";
    if (op == "Softplus") return "torch.softplus(" + x(0) + ")";
    if (op == "Gelu") {
      return a.s("approximate", "none") == "tanh" ? "torch.gelu(" + x(0) + ", approximate='tanh')"
                                                  : "torch.gelu(" + x(0) + ")";
    }
    if (op == "Clip") {
      std::string lo = "None", hi = "None";
      if (opset_ < 11) {
        if (a.has("min")) lo = num(a.f("min", 0));
        if (a.has("max")) hi = num(a.f("max", 0));
      } else {
        if (has(1)) lo = is_const(1) ? num(const_at(1).item<double>()) : x(1);
        if (has(2)) hi = is_const(2) ? num(const_at(2).item<double>()) : x(2);
      }
      if (is_integer(0)) {
        if (lo != "None" && is_const(1)) lo = std::to_string(const_at(1).item<int64_t>());
        if (hi != "None" && is_const(2)) hi = std::to_string(const_at(2).item<int64_t>());
      }
      if (lo == "None" && hi == "None") return x(0);
      return "torch.clamp(" + x(0) + ", " + lo + ", " + hi + ")";
    }
    if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") {
      if (op == "Hardmax") unsupported();
      const std::string fn = op == "Softmax" ? "torch.softmax" : "torch.log_softmax";
      const int64_t axis = a.i("axis", opset_ >= 13 ? -1 : 1);
      if (opset_ >= 13) return fn + "(" + x(0) + ", " + std::to_string(axis) + ")";
      // Before opset 13: over the input flattened to 2-d at `axis`.
      const std::string ax = axis < 0 ? "(" + x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
      return fn + "(" + x(0) + ".reshape(" + x(0) + ".shape[:" + ax + "] + [-1]), -1).reshape(" + x(0) + ".shape)";
    }
    if (op == "MatMul") {
      if (is_const(1) && const_at(1).dim() == 2 && at::isFloatingType(const_at(1).scalar_type())) {
        replace_param(1, const_at(1).t().contiguous(), "c1");
        return "torch.linear(" + x(0) + ", self.c1)";
      }
      return "torch.matmul(" + x(0) + ", " + x(1) + ")";
    }
    if (op == "Gemm") {
      const double alpha = a.f("alpha", 1.0), beta = a.f("beta", 1.0);
      const bool ta = a.i("transA", 0) != 0, tb = a.i("transB", 0) != 0;
      const std::string A = ta ? x(0) + ".t()" : x(0);
      if (is_const(1) && alpha == 1.0 && (beta == 1.0 || !has(2)) &&
          (!has(2) || (is_const(2) && const_at(2).dim() <= 1))) {
        if (!tb) replace_param(1, const_at(1).t().contiguous(), "c1");
        std::string bias = "None";
        if (has(2)) {
          const int64_t n = tb ? const_at(1).size(0) : const_at(1).size(1);
          replace_param(2, const_at(2).expand({n}).contiguous(), "c2");
          bias = "self.c2";
        }
        return "torch.linear(" + A + ", self.c1, " + bias + ")";
      }
      const std::string B = tb ? x(1) + ".t()" : x(1);
      std::string e = "torch.matmul(" + A + ", " + B + ")";
      if (alpha != 1.0) e = num(alpha) + " * " + e;
      if (has(2)) e += " + " + (beta != 1.0 ? num(beta) + " * " : std::string()) + x(2);
      return e;
    }
    if (op == "Conv" || op == "ConvTranspose") {
      const std::vector<int64_t> wshape = shape_of(1);
      if (wshape.size() < 3) unsupported("the weights' shape is unknown");
      const auto dims = static_cast<int64_t>(wshape.size()) - 2;
      if (dims < 1 || dims > 3) unsupported("only 1-d, 2-d and 3-d convolutions");
      std::vector<int64_t> kernel = a.is("kernel_shape", std::vector<int64_t>(wshape.begin() + 2, wshape.end()));
      const auto strides = a.is("strides", std::vector<int64_t>(dims, 1));
      const auto dil = a.is("dilations", std::vector<int64_t>(dims, 1));
      const int64_t group = a.i("group", 1);
      const std::string bias = has(2) ? x(2) : "None";
      const std::string d = std::to_string(dims);
      if (op == "Conv") {
        const auto pads = conv_pads(a, dims, kernel, strides, dil);
        std::vector<int64_t> sym;
        const std::string input = pad_if_asymmetric(x(0), pads, dims, sym, "0.0");
        return "torch.conv" + d + "d(" + input + ", " + x(1) + ", " + bias + ", " + ints(strides) + ", " + ints(sym) +
               ", " + ints(dil) + ", " + std::to_string(group) + ")";
      }
      auto pads = a.is("pads", std::vector<int64_t>(2 * dims, 0));
      std::vector<int64_t> out_pad = a.is("output_padding", std::vector<int64_t>(dims, 0));
      check_len(pads, static_cast<size_t>(2 * dims), "pads");
      check_len(out_pad, static_cast<size_t>(dims), "output_padding");
      check_len(strides, static_cast<size_t>(dims), "strides");
      check_len(dil, static_cast<size_t>(dims), "dilations");
      if (a.has("output_shape") || a.s("auto_pad", "NOTSET") != "NOTSET") unsupported("output_shape / auto_pad");
      for (int64_t k = 0; k < dims; ++k)
        if (pads[k] != pads[k + dims]) unsupported("asymmetric pads");
      pads.resize(dims);
      return "torch.conv_transpose" + d + "d(" + x(0) + ", " + x(1) + ", " + bias + ", " + ints(strides) + ", " +
             ints(pads) + ", " + ints(out_pad) + ", " + std::to_string(group) + ", " + ints(dil) + ")";
    }
    if (op == "BatchNormalization") {
      if (node.output_size() > 1) unsupported("training mode (running statistics as outputs)");
      return "torch.batch_norm(" + x(0) + ", " + x(1) + ", " + x(2) + ", " + x(3) + ", " + x(4) + ", False, 0.1, " +
             num(a.f("epsilon", 1e-5)) + ", False)";
    }
    if (op == "InstanceNormalization")
      return "torch.instance_norm(" + x(0) + ", " + x(1) + ", " + x(2) + ", None, None, True, 0.0, " +
             num(a.f("epsilon", 1e-5)) + ", False)";
    if (op == "LayerNormalization") {
      const int64_t axis = a.i("axis", -1);
      const std::string ax = axis < 0 ? "(" + x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
      const std::string y = "torch.layer_norm(" + x(0) + ", " + x(0) + ".shape[" + ax + ":], " + x(1) + ", " +
                            (has(2) ? x(2) : "None") + ", " + num(a.f("epsilon", 1e-5)) + ")";
      if (node.output_size() == 1) return y;
      pre_ << "    dims = [d for d in range(" << ax << ", " << x(0) << ".dim())]\n"
           << "    mu = torch.mean(" << x(0) << ", dims, True)\n"
           << "    var = torch.mean((" << x(0) << " - mu) * (" << x(0) << " - mu), dims, True)\n";
      return "(" + y + ", mu, torch.rsqrt(var + " + num(a.f("epsilon", 1e-5)) + "))";
    }
    if (op == "MaxPool" || op == "AveragePool" || op == "LpPool") {
      if (op == "LpPool") unsupported();
      if (node.output_size() > 1) unsupported("the indices output");
      const auto kernel = a.is("kernel_shape");
      const auto dims = static_cast<int64_t>(kernel.size());
      if (dims < 1 || dims > 3) unsupported("1-d to 3-d pooling");
      const auto strides = a.is("strides", std::vector<int64_t>(dims, 1));
      const auto dil = a.is("dilations", std::vector<int64_t>(dims, 1));
      const auto pads = conv_pads(a, dims, kernel, strides, dil);
      const bool ceil = a.i("ceil_mode", 0) != 0;
      const std::string d = std::to_string(dims);
      std::vector<int64_t> sym;
      // LibTorch pools pad at most half the kernel: wider pads become an explicit pad.
      bool wide = false;
      for (int64_t k = 0; k < dims; ++k) wide |= pads[k] > kernel[k] / 2 || pads[k + dims] > kernel[k] / 2;
      if (op == "MaxPool") {
        if (a.i("storage_order", 0) != 0) unsupported("storage_order 1");
        if (wide) {
          std::vector<int64_t> tp;
          for (int64_t d = dims - 1; d >= 0; --d) tp.push_back(pads[d]), tp.push_back(pads[d + dims]);
          pre_ << "    xp = torch.constant_pad_nd(" << x(0) << ", " << ints(tp) << ", float('-inf'))\n";
          return "torch.max_pool" + d + "d(xp, " + ints(kernel) + ", " + ints(strides) + ", " +
                 ints(std::vector<int64_t>(dims, 0)) + ", " + ints(dil) + ", " + (ceil ? "True" : "False") + ")";
        }
        const std::string input = pad_if_asymmetric(x(0), pads, dims, sym, "float('-inf')");
        return "torch.max_pool" + d + "d(" + input + ", " + ints(kernel) + ", " + ints(strides) + ", " + ints(sym) +
               ", " + ints(dil) + ", " + (ceil ? "True" : "False") + ")";
      }
      for (int64_t k : dil)
        if (k != 1) unsupported("dilated average pooling");
      const bool include = a.i("count_include_pad", 0) != 0;
      if (wide) {
        if (!include) unsupported("pads wider than half the kernel without count_include_pad");
        std::vector<int64_t> tp;
        for (int64_t k = dims - 1; k >= 0; --k) tp.push_back(pads[k]), tp.push_back(pads[k + dims]);
        pre_ << "    xp = torch.constant_pad_nd(" << x(0) << ", " << ints(tp) << ", 0.0)\n";
        return "torch.avg_pool" + d + "d(xp, " + ints(kernel) + ", " + ints(strides) + ", " +
               ints(std::vector<int64_t>(dims, 0)) + ", " + (ceil ? "True" : "False") + ", True)";
      }
      bool symmetric = true;
      for (int64_t k = 0; k < dims; ++k) symmetric &= pads[k] == pads[k + dims];
      if (!symmetric) unsupported("asymmetric pads");
      sym.assign(pads.begin(), pads.begin() + dims);
      return "torch.avg_pool" + d + "d(" + x(0) + ", " + ints(kernel) + ", " + ints(strides) + ", " + ints(sym) + ", " +
             (ceil ? "True" : "False") + ", " + (include ? "True" : "False") + ")";
    }
    if (op == "GlobalAveragePool") {
      const int64_t r = rank_of(0);
      if (r == 4) return "torch.adaptive_avg_pool2d(" + x(0) + ", [1, 1])";
      return "torch.mean(" + x(0) + ", [d for d in range(2, " + x(0) + ".dim())], True)";
    }
    if (op == "GlobalMaxPool") return "torch.amax(" + x(0) + ", [d for d in range(2, " + x(0) + ".dim())], True)";
    if (op == "Flatten") {
      const int64_t axis = a.i("axis", 1);
      if (axis == 1) return "torch.flatten(" + x(0) + ", 1)";
      if (axis == 0) return x(0) + ".reshape([1, -1])";
      const std::string ax = axis < 0 ? "(" + x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
      return x(0) + ".reshape([int(torch.tensor(" + x(0) + ".shape[:" + ax + "]).prod()), -1])";
    }
    if (op == "Reshape") {
      if (a.i("allowzero", 0) != 0) unsupported("allowzero");
      if (is_const(1)) {
        const auto s = const_ints(1);
        std::vector<std::string> items;
        for (size_t k = 0; k < s.size(); ++k)
          items.push_back(s[k] == 0 ? x(0) + ".size(" + std::to_string(k) + ")" : std::to_string(s[k]));
        return "torch.reshape(" + x(0) + ", [" + join(items) + "])";
      }
      pre_ << "    s: List[int] = " << x(1) << ".tolist()\n"
           << "    for k in range(len(s)):\n        if s[k] == 0:\n            s[k] = " << x(0) << ".size(k)\n";
      return "torch.reshape(" + x(0) + ", s)";
    }
    if (op == "Transpose") {
      auto perm = a.is("perm");
      if (perm.empty()) {
        const int64_t r = rank_of(0);
        if (r < 0) return x(0) + ".permute([d for d in range(" + x(0) + ".dim() - 1, -1, -1)])";
        for (int64_t d = r - 1; d >= 0; --d) perm.push_back(d);
      }
      return x(0) + ".permute(" + ints(perm) + ")";
    }
    if (op == "Squeeze" || op == "Unsqueeze") {
      std::vector<int64_t> axes;
      if (opset_ >= 13 && has(1)) {
        if (!is_const(1)) {
          const std::string l = list_input(1, in);
          pre_ << "    y = " << x(0) << "\n    r = y.dim()" << (op == "Squeeze" ? "" : " + len(" + l + ")")
               << "\n    axes: List[int] = []\n    for q in " << l << ":\n        if q < 0:\n            q = q + r\n"
               << "        axes.append(q)\n";
          if (op == "Squeeze")
            pre_ << "    axes.sort(reverse=True)\n    for ax in axes:\n        y = y.squeeze(ax)\n";
          else
            pre_ << "    axes.sort()\n    for ax in axes:\n        y = y.unsqueeze(ax)\n";
          return "y";
        }
        axes = const_ints(1);
      } else {
        axes = a.is("axes");
      }
      if (op == "Squeeze") {
        if (axes.empty()) return "torch.squeeze(" + x(0) + ")";
        pre_ << "    y = " << x(0) << "\n    r = y.dim()\n";
        std::vector<std::string> norm;
        for (int64_t ax : axes) norm.push_back(ax < 0 ? "r + " + std::to_string(ax) : std::to_string(ax));
        pre_ << "    axes: List[int] = [" << join(norm) << "]\n    axes.sort(reverse=True)\n    for ax in axes:\n        y = y.squeeze(ax)\n";
        return "y";
      }
      pre_ << "    y = " << x(0) << "\n    r = y.dim() + " << axes.size() << "\n";
      std::vector<std::string> norm;
      for (int64_t ax : axes) norm.push_back(ax < 0 ? "r + " + std::to_string(ax) : std::to_string(ax));
      pre_ << "    axes: List[int] = [" << join(norm) << "]\n    axes.sort()\n    for ax in axes:\n        y = y.unsqueeze(ax)\n";
      return "y";
    }
    if (op == "Concat") {
      std::vector<std::string> parts;
      for (const auto& s : in)
        if (!s.empty()) parts.push_back(s);
      return "torch.cat([" + join(parts) + "], " + std::to_string(a.i("axis", 0)) + ")";
    }
    if (op == "Split") {
      const int64_t axis = a.i("axis", 0);
      std::vector<int64_t> split;
      if (opset_ >= 13 && has(1)) {
        if (!is_const(1)) return "torch.split(" + x(0) + ", " + list_input(1, in) + ", " + std::to_string(axis) + ")";
        split = const_ints(1);
      } else {
        split = a.is("split");
      }
      const int n = node.output_size();
      if (split.empty()) {
        pre_ << "    size = " << x(0) << ".size(" << axis << ")\n    chunk = (size + " << n - 1 << ") // " << n << "\n";
        return "torch.split(" + x(0) + ", chunk, " + std::to_string(axis) + ")";
      }
      return "torch.split(" + x(0) + ", " + ints(split) + ", " + std::to_string(axis) + ")";
    }
    if (op == "Slice") {
      std::string starts, ends, axes, steps;
      if (opset_ < 10) {
        starts = ints(a.is("starts"));
        ends = ints(a.is("ends"));
        axes = a.has("axes") ? ints(a.is("axes")) : "";
      } else {
        starts = list_input(1, in);
        ends = list_input(2, in);
        if (has(3)) axes = list_input(3, in);
        if (has(4)) steps = list_input(4, in);
      }
      pre_ << "    starts: List[int] = " << starts << "\n    ends: List[int] = " << ends << "\n";
      pre_ << "    axes: List[int] = " << (axes.empty() ? "[k for k in range(len(starts))]" : axes) << "\n";
      pre_ << "    steps: List[int] = " << (steps.empty() ? "[1 for k in range(len(starts))]" : steps) << "\n";
      pre_ << "    y = " << x(0) << "\n"
           << "    for k in range(len(starts)):\n"
           << "        ax = axes[k]\n        if ax < 0:\n            ax = ax + y.dim()\n"
           << "        n = y.size(ax)\n        s = starts[k]\n        e = ends[k]\n        st = steps[k]\n"
           << "        if st > 0:\n"
           << "            if s < 0:\n                s = max(0, n + s)\n"
           << "            if e < 0:\n                e = max(0, n + e)\n"
           << "            s = min(s, n)\n            e = min(max(e, s), n)\n"
           << "        else:\n"
           << "            if s < 0:\n                s = n + s\n"
           << "            if e < -n:\n                e = -1\n            elif e < 0:\n                e = n + e\n"
           << "            s = min(max(s, -1), n - 1)\n            e = min(max(e, -1), n - 1)\n"
           << "        y = torch.index_select(y, ax, torch.arange(s, e, st, device=y.device))\n";
      return "y";
    }
    if (op == "Gather") {
      const int64_t axis = a.i("axis", 0);
      const std::string ax = axis < 0 ? "(" + x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
      pre_ << "    ax = " << ax << "\n    idx = " << x(1) << ".long()\n    idx = torch.where(idx < 0, idx + "
           << x(0) << ".size(ax), idx)\n";
      return "torch.index_select(" + x(0) + ", ax, idx.reshape([-1])).reshape(" + x(0) + ".shape[:ax] + idx.shape + " +
             x(0) + ".shape[ax + 1:])";
    }
    if (op == "Shape") {
      const int64_t start = a.i("start", 0);
      const std::string s = x(0) + ".shape";
      if (a.has("end")) return "torch.tensor(" + s + "[" + std::to_string(start) + ":" + std::to_string(a.i("end", 0)) + "])";
      return "torch.tensor(" + s + "[" + std::to_string(start) + ":])";
    }
    if (op == "Size") return "torch.tensor(" + x(0) + ".numel())";
    if (op == "Expand") {
      const std::string shape = list_input(1, in);
      pre_ << "    z = torch.zeros(" << shape << ").to(" << x(0) << ".dtype)\n";
      return "(" + x(0) + " + z) if " + x(0) + ".dtype != 11 else (" + x(0) + ".to(3) + z.to(3)).to(11)";
    }
    if (op == "Tile") return x(0) + ".repeat(" + list_input(1, in) + ")";
    if (op == "ConstantOfShape") {
      at::Tensor v = at::zeros({1}, at::kFloat);
      if (auto* t = a.find("value")) v = tensor_from_proto(t->t(), folder_);
      const std::string value = at::isFloatingType(v.scalar_type()) ? num(v.item<double>())
                                : v.scalar_type() == at::kBool ? (v.item<bool>() ? "True" : "False")
                                                               : std::to_string(v.item<int64_t>());
      return "torch.full(" + list_input(0, in) + ", " + value + ").to(" + dtype_name(v.scalar_type()) + ")";
    }
    if (op == "Range") {
      const bool integer = is_integer(0);
      const std::string cast = integer ? ".item())" : ".item())";
      (void)cast;
      if (integer)
        return "torch.arange(int(" + x(0) + ".item()), int(" + x(1) + ".item()), int(" + x(2) + ".item())).to(" + x(0) +
               ".dtype)";
      return "torch.arange(float(" + x(0) + ".item()), float(" + x(1) + ".item()), float(" + x(2) +
             ".item())).to(" + x(0) + ".dtype)";
    }
    if (op == "Cast") {
      const at::ScalarType t = scalar_type(static_cast<int32_t>(a.i("to", 1)), node.output(0));
      return x(0) + ".to(" + dtype_name(t) + ")";
    }
    if (op == "CastLike") return x(0) + ".to(" + x(1) + ".dtype)";
    if (op == "ReduceMean") return reduce("mean", a, in, opset_ >= 18);
    if (op == "ReduceSum") return reduce("sum", a, in, opset_ >= 13);
    if (op == "ReduceMax") return reduce("max", a, in, opset_ >= 18);
    if (op == "ReduceMin") return reduce("min", a, in, opset_ >= 18);
    if (op == "ReduceL2") return reduce("l2", a, in, opset_ >= 18);
    if (op == "ReduceL1") return reduce("l1", a, in, opset_ >= 18);
    if (op == "ArgMax" || op == "ArgMin") {
      if (a.i("select_last_index", 0) != 0) unsupported("select_last_index");
      return std::string(op == "ArgMax" ? "torch.argmax(" : "torch.argmin(") + x(0) + ", " +
             std::to_string(a.i("axis", 0)) + ", " + (a.i("keepdims", 1) ? "True" : "False") + ")";
    }
    if (op == "Resize" || op == "Upsample") {
      // Separable, explicit index maps: every coordinate transformation and nearest mode of
      // the spec, and linear interpolation with clamped neighbours (cubic is not imported).
      const std::string mode = a.s("mode", "nearest");
      if (mode != "nearest" && mode != "linear") unsupported("mode " + mode);
      std::string coord = "asymmetric", nearest = "floor";
      if (op == "Resize" && opset_ >= 11) {
        coord = a.s("coordinate_transformation_mode", "half_pixel");
        nearest = a.s("nearest_mode", "round_prefer_floor");
      }
      if (coord == "tf_crop_and_resize") unsupported("tf_crop_and_resize");
      if (a.i("exclude_outside", 0) != 0 || a.has("axes") || a.s("keep_aspect_ratio_policy", "stretch") != "stretch")
        unsupported("exclude_outside / axes / keep_aspect_ratio_policy");
      const int64_t rank = rank_of(0) > 0 ? rank_of(0) : 4;
      std::string scales, sizes;
      if (op == "Upsample" && opset_ < 9) {
        std::vector<std::string> v;
        for (double f : a.find("scales") ? std::vector<double>(a.find("scales")->floats().begin(), a.find("scales")->floats().end())
                                         : std::vector<double>())
          v.push_back(num(f));
        scales = "[" + join(v) + "]";
      } else {
        const int si = op == "Upsample" || opset_ < 11 ? 1 : 2;
        if (has(si) && !(is_const(si) && const_at(si).numel() == 0)) {
          pre_ << "    sc: List[float] = " << x(si) << ".to(7).tolist()\n";
          scales = "sc";
        }
        if (op == "Resize" && opset_ >= 11 && has(3)) sizes = list_input(3, in);
      }
      CANDELA_CHECK_T(UnsupportedModel, !scales.empty() || !sizes.empty(), "ONNX ", op, " node '", node.name(),
                      "' has neither scales nor sizes.");
      pre_ << "    y = " << x(0) << "\n";
      for (int64_t ax = 0; ax < rank; ++ax) {
        const std::string A = std::to_string(ax);
        pre_ << "    n_in = y.size(" << A << ")\n";
        if (!sizes.empty()) {
          pre_ << "    n_out = " << sizes << "[" << A << "]\n    s = float(n_out) / float(n_in)\n";
        } else {
          pre_ << "    s = " << scales << "[" << A << "]\n    n_out = int(float(n_in) * s)\n";
        }
        pre_ << "    if n_out != n_in or s != 1.0:\n";
        pre_ << "        dst = torch.arange(n_out).to(7)\n";
        if (coord == "half_pixel") pre_ << "        xo = (dst + 0.5) / s - 0.5\n";
        else if (coord == "pytorch_half_pixel") pre_ << "        xo = (dst + 0.5) / s - 0.5 if n_out > 1 else dst * 0.0\n";
        else if (coord == "align_corners")
          // The spec's length_resized is n_in * scale before rounding (2.4 for 4 x 0.6, not 2).
          pre_ << "        den = float(n_in) * s - 1.0\n"
               << "        xo = dst * float(n_in - 1) / den if den != 0.0 else dst * 0.0\n";
        else if (coord == "asymmetric") pre_ << "        xo = dst / s\n";
        else if (coord == "tf_half_pixel_for_nn") pre_ << "        xo = (dst + 0.5) / s\n";
        else unsupported("coordinate_transformation_mode " + coord);
        if (mode == "nearest") {
          std::string r;
          if (nearest == "round_prefer_floor") r = "torch.ceil(xo - 0.5)";
          else if (nearest == "round_prefer_ceil") r = "torch.floor(xo + 0.5)";
          else if (nearest == "floor") r = "torch.floor(xo)";
          else if (nearest == "ceil") r = "torch.ceil(xo)";
          else unsupported("nearest_mode " + nearest);
          pre_ << "        idx = torch.clamp(" << r << ", 0.0, float(n_in - 1)).to(4).to(y.device)\n"
               << "        y = torch.index_select(y, " << A << ", idx)\n";
        } else {
          pre_ << "        xo = torch.clamp(xo, 0.0, float(n_in - 1))\n        i0 = torch.floor(xo)\n"
               << "        w = (xo - i0).to(y.dtype).to(y.device)\n"
               << "        i1 = torch.clamp(i0 + 1.0, 0.0, float(n_in - 1)).to(4).to(y.device)\n"
               << "        i0 = i0.to(4).to(y.device)\n"
               << "        shape = [1 for d in range(y.dim())]\n        shape[" << A << "] = n_out\n"
               << "        w = w.reshape(shape)\n"
               << "        y = torch.index_select(y, " << A << ", i0) * (1.0 - w) + torch.index_select(y, " << A
               << ", i1) * w\n";
        }
      }
      return "y";
    }
    if (op == "Einsum") {
      std::vector<std::string> parts;
      for (const auto& s : in) parts.push_back(s);
      return "torch.einsum('" + a.s("equation", "") + "', [" + join(parts) + "])";
    }
    if (op == "Pad") {
      std::vector<int64_t> pads;
      std::string value = "0.0";
      if (opset_ < 11) {
        pads = a.is("pads");
        value = num(a.f("value", 0.0));
      } else {
        if (!is_const(1)) {
          const std::string l = list_input(1, in);
          std::string value_d = "0.0";
          if (has(2)) value_d = is_const(2) ? num(const_at(2).item<double>()) : "float(" + x(2) + ".item())";
          if (a.s("mode", "constant") != "constant" || has(3)) unsupported("run-time pads with this mode");
          pre_ << "    h = len(" << l << ") // 2\n    tp: List[int] = []\n    for d in range(h - 1, -1, -1):\n"
               << "        tp.append(" << l << "[d])\n        tp.append(" << l << "[d + h])\n";
          return "torch.constant_pad_nd(" + x(0) + ", tp, " + value_d + ")";
        }
        pads = const_ints(1);
        if (has(2)) value = is_const(2) ? num(const_at(2).item<double>()) : "float(" + x(2) + ".item())";
        if (has(3)) unsupported("the axes input");
      }
      const auto dims = static_cast<int64_t>(pads.size() / 2);
      std::vector<int64_t> tp;
      for (int64_t d = dims - 1; d >= 0; --d) tp.push_back(pads[d]), tp.push_back(pads[d + dims]);
      while (tp.size() > 2 && tp[tp.size() - 1] == 0 && tp[tp.size() - 2] == 0) tp.resize(tp.size() - 2);
      const std::string mode = a.s("mode", "constant");
      if (mode == "constant") {
        if (is_integer(0)) value = std::to_string(static_cast<int64_t>(std::stod(value == "0.0" ? "0" : value)));
        return "torch.constant_pad_nd(" + x(0) + ", " + ints(tp) + ", " + value + ")";
      }
      const std::string fn = mode == "reflect" ? "torch.reflection_pad" : mode == "edge" ? "torch.replication_pad" : "";
      if (fn.empty()) unsupported("pad mode " + mode);
      const auto spatial = static_cast<int64_t>(tp.size() / 2);
      if (spatial < 1 || spatial > 3) unsupported("this padding");
      return fn + std::to_string(spatial) + "d(" + x(0) + ", " + ints(tp) + ")";
    }
    unsupported();
  }

  void replace_param(int k, const at::Tensor& value, const std::string& name) {
    // Called while the node's submodule is being built: the constant is re-registered in the
    // layout the emitted op needs (e.g. a MatMul's weight transposed for linear).
    pending_.emplace_back(name, value);
    (void)k;
  }

 public:
  std::vector<std::pair<std::string, at::Tensor>> take_pending() { return std::exchange(pending_, {}); }

 private:
  const onnx::ModelProto& model_;
  std::string folder_;
  bool single_output_;
  int64_t opset_ = 0;
  std::map<std::string, at::Tensor> constants_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::map<std::string, int32_t> types_;
  std::map<std::string, std::string> vars_;
  std::set<std::string> defined_;
  const onnx::NodeProto* node_ = nullptr;
  std::ostringstream pre_, source_;
  int unused_ = 0;
  std::vector<std::pair<std::string, at::Tensor>> pending_;
};

// libonnx's checker and shape inference are run in a child process: on malformed input they
// can crash (fuzzing found a null dereference and a division by zero in Debian's 1.12), and a
// crash there must become an error here. The child sends back the inferred model, or the
// message of the exception it caught.
void check_and_infer(onnx::ModelProto& model, const std::string& name) {
  int fds[2];
  CANDELA_CHECK_T(IoError, pipe(fds) == 0, "cannot create a pipe to check '", name, "'.");
  const pid_t pid = fork();
  CANDELA_CHECK_T(IoError, pid >= 0, "cannot fork to check '", name, "'.");
  if (pid == 0) {
    close(fds[0]);
    std::string reply;
    try {
      onnx::checker::CheckerContext ctx;
      ctx.set_ir_version(static_cast<int>(model.ir_version()));
      std::unordered_map<std::string, int> opsets;
      for (const auto& o : model.opset_import()) opsets[o.domain()] = static_cast<int>(o.version());
      ctx.set_opset_imports(opsets);
      onnx::checker::LexicalScopeContext lex;
      try {
        onnx::checker::check_graph(model.graph(), ctx, lex);
      } catch (const std::exception& e) {
        reply = std::string("C") + first_line(e.what());
      }
      if (reply.empty()) {
        try {
          onnx::shape_inference::InferShapes(model);
          reply = "M" + model.SerializeAsString();
        } catch (const std::exception& e) {
          reply = std::string("I") + first_line(e.what());
        }
      }
    } catch (...) {
      reply = "Cunknown error";
    }
    size_t done = 0;
    while (done < reply.size()) {
      const ssize_t n = write(fds[1], reply.data() + done, reply.size() - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string reply;
  char buf[1 << 16];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) reply.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CANDELA_CHECK_T(UnsupportedModel, WIFEXITED(status) && WEXITSTATUS(status) == 0 && !reply.empty(), "'", name,
                  "' crashed the ONNX checker or shape inference (malformed model); fix or re-export it.");
  if (reply[0] == 'C')
    throw UnsupportedModel(str_cat("'", name, "' fails the ONNX checker: ", reply.substr(1), ". Fix or re-export the model."));
  if (reply[0] == 'I') throw UnsupportedModel(str_cat("'", name, "' fails ONNX shape inference: ", reply.substr(1), "."));
  CANDELA_CHECK_T(UnsupportedModel, model.ParseFromString(reply.substr(1)), "'", name,
                  "': the checked model could not be read back.");
}

}  // namespace

OnnxImport import_onnx_bytes(const std::string& bytes, const std::string& folder, const std::string& name,
                             bool single_output) {
  onnx::ModelProto model;
  CANDELA_CHECK_T(ParseError, static_cast<int64_t>(bytes.size()) <= kMaxFileBytes, "'", name,
                  "' is larger than 4 GB; keep large weights as external data next to the model.");
  CANDELA_CHECK_T(ParseError, !bytes.empty() && model.ParseFromString(bytes), "'", name,
                  "' is not a valid ONNX file (the protobuf does not parse: truncated or not ONNX). Export it "
                  "again with torch.onnx.export or tf2onnx.");
  CANDELA_CHECK_T(ParseError, model.has_graph() && model.graph().node_size() > 0, "'", name,
                  "' parses but holds no ONNX graph; is it really an ONNX model?");
  // libonnx 1.12's shape inference divides by these without checking (found by fuzzing).
  static const std::set<std::string> conv_pool = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool",
                                                  "MaxUnpool", "ConvInteger", "QLinearConv", "MaxRoiPool"};
  for (const auto& n : model.graph().node()) {
    if (!conv_pool.count(n.op_type())) continue;
    for (const auto& a : n.attribute()) {
      const bool positive = a.name() == "strides" || a.name() == "dilations" || a.name() == "kernel_shape";
      const bool non_negative = a.name() == "pads" || a.name() == "output_padding";
      if (!positive && !non_negative) continue;
      for (int64_t v : a.ints())
        CANDELA_CHECK_T(ParseError, positive ? v >= 1 : v >= 0, "ONNX ", n.op_type(), " node '", n.name(), "': attribute '",
                        a.name(), "' has the value ", v, "; it must be ", positive ? "at least 1." : "non-negative.");
    }
  }
  // External data first: the checker would read any path it is given.
  for (const auto& t : model.graph().initializer())
    if (t.data_location() == onnx::TensorProto::EXTERNAL) external_file(t, folder);
  check_and_infer(model, name);
  Converter c(model, folder, single_output);
  return c.run();
}

OnnxImport import_onnx(const std::string& path, bool single_output) {
  std::error_code ec;
  CANDELA_CHECK_T(IoError, fs::is_regular_file(path, ec), "cannot read '", path, "': no such file.");
  const auto size = static_cast<int64_t>(fs::file_size(path, ec));
  CANDELA_CHECK_T(ParseError, size <= kMaxFileBytes, "'", path,
                  "' is larger than 4 GB; keep large weights as external data next to the model.");
  std::ifstream in(path, std::ios::binary);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.read(bytes.data(), size);
  CANDELA_CHECK_T(IoError, in.good() || in.eof(), "cannot read '", path, "'.");
  return import_onnx_bytes(bytes, fs::path(path).parent_path().string(), path, single_output);
}

at::Tensor read_onnx_tensor(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  CANDELA_CHECK_T(IoError, in.good(), "cannot read '", path, "'.");
  std::stringstream ss;
  ss << in.rdbuf();
  onnx::TensorProto t;
  CANDELA_CHECK_T(ParseError, t.ParseFromString(ss.str()), "'", path, "' is not an ONNX TensorProto.");
  return tensor_from_proto(t, fs::path(path).parent_path().string());
}

}  // namespace candela::detail
