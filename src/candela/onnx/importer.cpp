// The ONNX importer (importer.h): tensors from TensorProtos, libonnx's checks in a child process,
// and the graph walk that makes each node a submodule whose forward() is what the node's emitter
// (emit.h, ops_*.cpp) returns.
#include "importer.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <ATen/ATen.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "candela/core/error.h"
#include "candela/detail/tensor_util.h"
#include "emit.h"

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

}  // namespace

at::ScalarType onnx_import::scalar_type(int32_t t, const std::string& what) {
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

at::Tensor onnx_import::tensor_from_proto(const onnx::TensorProto& t, const std::string& folder) {
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

// ---- the graph --------------------------------------------------------------------------------

namespace {

using onnx_import::Attr;
using onnx_import::Emit;
using onnx_import::GraphValues;
using onnx_import::join;
using onnx_import::tensor_from_proto;

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

// A graph input's name as a forward() parameter: a Python identifier that no generated name
// (v0, v1, ...) or name the code uses can take.
std::string parameter_name(const std::string& name) {
  std::string v = sanitize(name);
  static const std::set<std::string> reserved = {"torch", "Tensor", "Optional", "List", "is", "lambda", "while",
                                                 "with", "class", "import", "from", "as", "del", "global", "assert",
                                                 "break", "continue", "elif", "except", "finally", "raise", "try",
                                                 "yield", "nonlocal", "async", "await", "int", "float", "bool",
                                                 "range", "len", "min", "max", "abs", "sum", "list", "tuple", "math"};
  bool generated = v.size() > 1 && v[0] == 'v' &&
                   std::all_of(v.begin() + 1, v.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
  if (generated || reserved.count(v) || v.rfind("_unused", 0) == 0) v += "_";
  return v;
}

// Two graph inputs of one shape: the same rank and, dimension by dimension, the same fixed size
// or the same symbolic name.
bool same_shape(const onnx::ValueInfoProto& a, const onnx::ValueInfoProto& b) {
  if (!a.type().has_tensor_type() || !b.type().has_tensor_type()) return false;
  const auto &ta = a.type().tensor_type(), &tb = b.type().tensor_type();
  if (!ta.has_shape() || !tb.has_shape() || ta.shape().dim_size() != tb.shape().dim_size()) return false;
  for (int k = 0; k < ta.shape().dim_size(); ++k) {
    const auto &da = ta.shape().dim(k), &db = tb.shape().dim(k);
    if (da.has_dim_value() && db.has_dim_value() && da.dim_value() == db.dim_value()) continue;
    if (da.has_dim_param() && db.has_dim_param() && !da.dim_param().empty() && da.dim_param() == db.dim_param()) continue;
    return false;
  }
  return true;
}

class Converter {
 public:
  Converter(const onnx::ModelProto& model, std::string folder, bool single_output)
      : model_(model), single_output_(single_output) {
    values_.folder = std::move(folder);
  }

  OnnxImport run() {
    const auto& g = model_.graph();
    for (const auto& op : model_.opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") values_.opset = op.version();
    CANDELA_CHECK_T(UnsupportedModel, values_.opset >= 1 && values_.opset <= 18, "the model uses ONNX opset ",
                    values_.opset, "; Candela imports opsets up to 18. Convert it with onnx.version_converter.");
    for (const auto& t : g.initializer()) values_.constants[t.name()] = tensor_from_proto(t, values_.folder);
    for (const auto& vi : g.value_info()) record_shape(vi);
    for (const auto& vi : g.input()) record_shape(vi);
    for (const auto& vi : g.output()) record_shape(vi);
    OnnxImport out;
    out.opset = values_.opset;
    // Inputs become forward()'s parameters, named as the graph names them (input_ids,
    // attention_mask): the names users give forward arguments by. An integer input after the
    // first with the first one's shape (the same dimensions, fixed or symbolic) gets the default
    // the exported transformer had: ones for an input whose name holds "mask", zeros for any other
    // (token type ids). Other inputs must be given.
    std::vector<std::string> args, defaults;
    const onnx::ValueInfoProto* first = nullptr;
    std::set<std::string> taken;
    for (const auto& in : g.input()) {
      if (values_.constants.count(in.name())) continue;
      out.inputs.push_back(in.name());
      std::string v = parameter_name(in.name());
      while (taken.count(v)) v += "_";
      taken.insert(v);
      vars_[in.name()] = v;
      defined_.insert(in.name());
      if (!first) {
        first = &in;
        args.push_back(v + ": Tensor");
        continue;
      }
      const int32_t elem = in.type().has_tensor_type() ? in.type().tensor_type().elem_type() : 0;
      const bool integer = elem == onnx::TensorProto::INT64 || elem == onnx::TensorProto::INT32 ||
                           elem == onnx::TensorProto::BOOL;
      if (!integer || !same_shape(*first, in)) {
        args.push_back(v + ": Tensor");
        continue;
      }
      std::string lower = in.name();
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      const at::ScalarType st = onnx_import::scalar_type(elem, in.name());
      args.push_back(v + ": Optional[Tensor] = None");
      defaults.resize(args.size());
      defaults.back() = str_cat("    if ", v, " is None:\n        ", v, " = torch.",
                                lower.find("mask") != std::string::npos ? "ones" : "zeros", "(", vars_.at(first->name()),
                                ".size(), dtype=", static_cast<int>(st), ", device=", vars_.at(first->name()), ".device)\n");
    }
    // Defaults only after the last parameter that has none (Python's rule).
    defaults.resize(args.size());
    for (size_t k = 0; k < args.size(); ++k)
      if (defaults[k].empty())
        for (size_t j = 0; j < k; ++j)
          if (!defaults[j].empty()) {
            args[j] = args[j].substr(0, args[j].find(':')) + ": Tensor";
            defaults[j].clear();
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
        values_.constants[name] = constant_value(node);
        continue;
      }
      // Inputs: computed values are arguments of the node's submodule; constants its state.
      // Each submodule gets a class of its own, named as PyTorch mangles a repeated class name
      // (__torch__.___torch_mangle_<k>.<Op>; layer types read the last part, the operator). Nodes
      // that share one qualified name (every Add an `__torch__.Add`) made compiling the root's
      // forward() take time and memory doubling with each further node of that operator: the
      // opset-14 export of a BERT-like model (decomposed LayerNorms, 31 Adds) died with
      // std::bad_alloc.
      torch::jit::Module sub{c10::QualifiedName("__torch__.___torch_mangle_" + std::to_string(ni) + "." + op)};
      std::vector<std::string> in_expr, sub_args, call_args;
      for (int k = 0; k < node.input_size(); ++k) {
        const std::string& iname = node.input(k);
        if (iname.empty()) {
          in_expr.push_back("");
          continue;
        }
        if (values_.constants.count(iname)) {
          const std::string p = "c" + std::to_string(k);
          const at::Tensor& t = values_.constants.at(iname);
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
      Emit emit(values_, node, in_expr);
      // Before opset 7, binary operators broadcast along `axis` when asked to, which no emitter
      // does. (The checker refuses these attributes on every other operator.)
      if (values_.opset < 7 && emit.a.i("broadcast", 0) != 0 && emit.a.has("axis"))
        emit.unsupported("the legacy broadcast attribute with an axis (opset < 7)");
      const auto& ops = onnx_import::op_table().ops;
      const auto emitter = ops.find(op);
      if (emitter == ops.end()) emit.unsupported();
      const std::string expr = emitter->second(emit);
      for (const auto& [pname, value] : emit.pending) sub.register_parameter(pname, value, false);
      std::ostringstream src;
      src << "def forward(self" << (sub_args.empty() ? "" : ", ");
      for (size_t k = 0; k < sub_args.size(); ++k) src << (k ? ", " : "") << sub_args[k];
      src << "):\n" << emit.pre.str() << "    return " << expr << "\n";
      try {
        sub.define(src.str());
      } catch (const std::exception& e) {
        throw UnsupportedModel(str_cat("ONNX node '", node.name(), "' (", op, ", opset ", values_.opset,
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
      if (values_.constants.count(o.name()) && !defined_.count(o.name())) {
        root.register_buffer("out_" + sanitize(o.name()), values_.constants.at(o.name()));
        results.push_back("self.out_" + sanitize(o.name()));
      } else {
        CANDELA_CHECK_T(UnsupportedModel, defined_.count(o.name()), "the ONNX graph's output '", o.name(),
                        "' is never computed.");
        results.push_back(var(o.name()));
      }
    }
    CANDELA_CHECK_T(UnsupportedModel, !results.empty(), "the ONNX graph has no output.");
    std::ostringstream fwd;
    fwd << "def forward(self, " << join(args) << "):\n";
    for (const auto& d : defaults) fwd << d;
    fwd << body.str() << "    return "
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
    auto it = values_.shapes.find(out.inputs[0]);
    if (it != values_.shapes.end() && it->second.size() >= 2) {
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
    values_.types[vi.name()] = tt.elem_type();
    if (!tt.has_shape()) return;
    std::vector<int64_t> dims;
    for (const auto& d : tt.shape().dim()) dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
    values_.shapes[vi.name()] = dims;
  }
  at::Tensor constant_value(const onnx::NodeProto& node) {
    Attr a{node};
    if (auto* v = a.find("value")) return tensor_from_proto(v->t(), values_.folder);
    if (auto* v = a.find("value_float")) return at::scalar_tensor(v->f(), at::kFloat);
    if (auto* v = a.find("value_int")) return at::scalar_tensor(v->i(), at::kLong);
    if (auto* v = a.find("value_floats")) return at::tensor(std::vector<float>(v->floats().begin(), v->floats().end()));
    if (auto* v = a.find("value_ints")) return at::tensor(std::vector<int64_t>(v->ints().begin(), v->ints().end()));
    throw UnsupportedModel(str_cat("ONNX Constant node '", node.name(), "' has no supported value attribute."));
  }

  const onnx::ModelProto& model_;
  bool single_output_;
  GraphValues values_;
  std::map<std::string, std::string> vars_;
  std::set<std::string> defined_;
  std::ostringstream source_;
  int unused_ = 0;
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
  // Operators outside the standard domain, before the checker (which knows none of them and
  // would only say that no such operator is registered).
  for (const auto& n : model.graph().node()) {
    if (n.domain().empty() || n.domain() == "ai.onnx") continue;
    if (n.domain() == "com.microsoft")
      throw UnsupportedModel(str_cat(
          "'", name, "': ONNX operator com.microsoft::", n.op_type(), " (node '", n.name(),
          "') is a fused operator of ONNX Runtime's contrib domain, written by its transformer optimizer "
          "(onnxruntime.transformers / optimum with optimization on). Candela imports the standard operators only: "
          "use the model as exported (torch.onnx.export), before the optimizer fused it."));
    throw UnsupportedModel(str_cat("'", name, "': ONNX operator ", n.domain(), "::", n.op_type(), " (node '", n.name(),
                                   "') is from a custom domain; Candela imports the standard operators only. "
                                   "Export the model with standard ONNX operators."));
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
