#include "candela/core/model.h"
#include "../onnx/importer.h"

#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include "candela/core/error.h"
#include "candela/detail/forward_args.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/sidecar.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/graph_util.h"
#include "candela/graph/local_forward.h"
#include "candela/text/tokenizer.h"

namespace candela {

namespace fs = std::filesystem;
using detail::parse_sidecar;
using detail::shape_str;
using detail::Sidecar;
using detail::str_cat;
using detail::torch_message;

// ---- InputSpec -------------------------------------------------------------------

bool InputSpec::is_image() const {
  return shape.size() == 3 && (layout == "NCHW" || layout == "NHWC");
}
int64_t InputSpec::channels() const { return layout == "NHWC" ? shape.at(2) : shape.at(0); }
int64_t InputSpec::height() const { return layout == "NHWC" ? shape.at(0) : shape.at(1); }
int64_t InputSpec::width() const { return layout == "NHWC" ? shape.at(1) : shape.at(2); }

nlohmann::json InputSpec::to_json() const {
  nlohmann::json j = {{"shape", shape}, {"layout", layout}};
  if (is_image()) j["range"] = {range_min, range_max};
  if (!mean.empty()) j["mean"] = mean;
  if (!std.empty()) j["std"] = std;
  return j;
}

InputSpec InputSpec::from_json(const nlohmann::json& j, const std::string& source) {
  CANDELA_CHECK_T(ParseError, j.is_object(), source, ": \"input\" must be an object like ",
                  R"({"shape": [3, 224, 224], "layout": "NCHW"})", ".");
  InputSpec s;
  try {
    if (j.contains("shape")) {
      const auto& shape = j.at("shape");
      CANDELA_CHECK_T(ParseError,
                      shape.is_array() && std::all_of(shape.begin(), shape.end(),
                                                      [](const nlohmann::json& d) { return d.is_number_integer(); }),
                      source, ": \"shape\" must be a list of whole numbers like [3, 224, 224], got ", shape.dump(), ".");
      s.shape = shape.get<std::vector<int64_t>>();
    }
    if (j.contains("layout")) s.layout = j.at("layout").get<std::string>();
    if (j.contains("mean")) s.mean = j.at("mean").get<std::vector<double>>();
    if (j.contains("std")) s.std = j.at("std").get<std::vector<double>>();
    if (j.contains("range")) {
      auto r = j.at("range").get<std::vector<double>>();
      CANDELA_CHECK_T(ParseError, r.size() == 2, source, ": \"range\" must be [min, max].");
      s.range_min = r[0];
      s.range_max = r[1];
    }
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat(source, ": bad \"input\" entry (", e.what(),
                             "). Expected shape: [ints], layout: string, mean/std: [numbers], range: [min, max]."));
  }
  try {
    s.validate();
  } catch (const InvalidArgument& e) {
    throw ParseError(str_cat(source, ": ", e.what()));
  }
  return s;
}

void InputSpec::validate() const {
  static const std::vector<std::string> layouts = {"", "NCHW", "NHWC", "NC", "NL", "NCL"};
  CANDELA_CHECK(std::find(layouts.begin(), layouts.end(), layout) != layouts.end(), "unknown layout '",
                layout, "'; use NCHW, NHWC, NC (tabular), NL (tokens) or NCL.", did_you_mean(layout, layouts));
  for (auto d : shape) CANDELA_CHECK(d > 0 && d < (int64_t(1) << 31), "input shape ", shape_str(shape),
                                     " has a non-positive or absurd dimension.");
  if (is_image()) {
    auto c = static_cast<size_t>(channels());
    CANDELA_CHECK(mean.empty() || mean.size() == c || mean.size() == 1, "mean has ", mean.size(),
                  " values but the input has ", c, " channels.");
    CANDELA_CHECK(std.empty() || std.size() == c || std.size() == 1, "std has ", std.size(),
                  " values but the input has ", c, " channels.");
  }
  for (double v : std) CANDELA_CHECK(v > 0, "std values must be positive, got ", v, ".");
  CANDELA_CHECK(range_max > range_min, "range must be [min, max] with max > min.");
}

// ---- Model -------------------------------------------------------------------------

struct Model::Impl {
  std::optional<torch::jit::Module> module;
  Function fn;
  InputSpec spec;
  std::vector<std::string> classes, features;
  std::string name, source, output_kind = "logits", device = "cpu";
  nlohmann::json tokenizer;
  bool extra_parameters = false;  // forward() takes parameters after the input

  std::mutex cache_mutex;
  std::map<std::string, std::shared_ptr<void>> cache;

  // forward_inference's optimised copy, for the weights it was built from.
  std::mutex inference_mutex;
  struct Inference {
    std::string weights;                  // fingerprint of the module's tensors when built
    std::optional<torch::jit::Module> module;  // empty: freezing failed, use forward()
    std::set<std::string> refused;        // input kinds (dtype, per-sample shape) it failed on or disagreed
    std::set<std::string> checked;        // input kinds checked against forward()
    // The same frozen graph cut for local re-evaluation (forward_local), or null.
    std::shared_ptr<const detail::LocalForward> local;
    std::set<std::string> local_checked, local_refused;
  };
  std::shared_ptr<Inference> inference;
  std::shared_ptr<Inference> current_inference();  // built or rebuilt for the current weights

  std::once_flag probed;
  std::vector<LayerInfo> layers;
  int64_t activation_bytes = 0;
  std::string probe_error;
  void probe(const Model& model);
};

namespace {

// The file's text, then parse_sidecar.
Sidecar read_sidecar(const fs::path& json_path) {
  std::ifstream in(json_path, std::ios::binary);
  CANDELA_CHECK_T(IoError, in.good(), "cannot read the model's sidecar '", json_path.string(), "'.");
  std::stringstream text;
  text << in.rdbuf();
  return parse_sidecar(text.str(), json_path.string());
}

}  // namespace

namespace detail {
Sidecar parse_sidecar(const std::string& text, const std::string& src) {
  Sidecar m;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat("'", src, "' is not valid JSON (", e.what(), "). Fix or remove the sidecar file."));
  }
  CANDELA_CHECK_T(ParseError, j.is_object(), src, ": the sidecar must be a JSON object.");
  try {
    if (j.contains("input")) m.spec = InputSpec::from_json(j.at("input"), src);
    if (j.contains("classes")) m.classes = j.at("classes").get<std::vector<std::string>>();
    if (j.contains("feature_names")) m.features = j.at("feature_names").get<std::vector<std::string>>();
    if (j.contains("output")) m.output_kind = j.at("output").get<std::string>();
    if (j.contains("tokenizer")) m.tokenizer = j.at("tokenizer");
  } catch (const nlohmann::json::exception& e) {
    throw ParseError(str_cat(src, ": ", e.what(),
                             ". Expected {\"input\": {...}, \"classes\": [strings], \"feature_names\": [strings], "
                             "\"output\": \"logits\"}."));
  }
  return m;
}
}  // namespace detail

Model Model::load(const std::string& path) {
  fs::path p(path);
  std::error_code ec;
  CANDELA_CHECK_T(IoError, fs::exists(p, ec), "model file '", path, "' does not exist. Check the --model path.");
  CANDELA_CHECK_T(IoError, fs::is_regular_file(p, ec), "model path '", path, "' is not a regular file.");
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  torch::jit::Module module;
  InputSpec onnx_spec;
  if (ext == ".onnx") {
    // ONNX graphs are rebuilt as TorchScript (see src/candela/onnx/importer.h).
    detail::OnnxImport imp = detail::import_onnx(path);
    module = imp.module;
    onnx_spec = imp.spec;
  } else {
    try {
      module = torch::jit::load(path, torch::kCPU);
    } catch (const std::exception& e) {
      throw UnsupportedModel(str_cat("'", path, "' is not a TorchScript file (", torch_message(e),
                                     "). Save the model with torch.jit.script(model).save(path) or "
                                     "torch.jit.trace(model, example).save(path), or export it to ONNX."));
    }
  }
  CANDELA_CHECK_T(UnsupportedModel, module.find_method("forward").has_value(), "'", path,
                  "' has no forward method; Candela explains a module's forward().");
  module.eval();

  Model m = from_module(module, onnx_spec);
  m.impl_->source = path;
  m.impl_->name = p.stem().string();
  fs::path sidecar = p;
  sidecar.replace_extension(".json");
  if (fs::exists(sidecar, ec)) {
    Sidecar side = read_sidecar(sidecar);
    m.impl_->spec = std::move(side.spec);
    m.impl_->classes = std::move(side.classes);
    m.impl_->features = std::move(side.features);
    m.impl_->output_kind = std::move(side.output_kind);
    if (!side.tokenizer.is_null())
      m.impl_->tokenizer =
          TokenizerConfig::from_json(side.tokenizer, sidecar.parent_path().string(), sidecar.string()).to_json();
  }
  return m;
}

Model Model::from_module(const torch::jit::Module& module, InputSpec spec) {
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->module = module;
  m.impl_->spec = std::move(spec);
  m.impl_->name = "module";
  m.impl_->extra_parameters = !m.forward_parameters().empty();
  return m;
}

Model Model::from_function(Function fn, InputSpec spec, std::string name) {
  CANDELA_CHECK(static_cast<bool>(fn), "Model::from_function needs a callable.");
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->fn = std::move(fn);
  m.impl_->spec = std::move(spec);
  m.impl_->name = std::move(name);
  return m;
}

at::Tensor Model::forward(const at::Tensor& batch) const {
  at::Tensor out;
  try {
    if (impl_->module) {
      std::vector<c10::IValue> in = {detail::model_input(batch, impl_->spec.layout == "NL")};
      if (impl_->extra_parameters) {
        auto extra = detail::all_forward_args(*this, batch.size(0), batch.device());
        in.insert(in.end(), extra.begin(), extra.end());
      }
      auto result = impl_->module->forward(std::move(in));
      CANDELA_CHECK_T(UnsupportedModel, result.isTensor(), "the model returned a ", result.tagKind(),
                      ", not a tensor. Candela explains one output tensor: wrap the model so forward() "
                      "returns the tensor to explain.");
      out = result.toTensor();
    } else {
      out = impl_->fn(batch);
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    // c10::Error, or the TorchScript interpreter's own exception type.
    std::string msg = torch_message(e);
    throw ShapeMismatch(str_cat("the model failed on an input of shape ", shape_str(batch.sizes()), ": ", msg,
                                ". Check that the input matches what the model expects "
                                "(--input-shape, the model's .json sidecar)."));
  }
  CANDELA_CHECK_T(UnsupportedModel, out.defined() && out.dim() >= 1 && out.size(0) == batch.size(0),
                  "the model's output has shape ", out.defined() ? shape_str(out.sizes()) : "(undefined)",
                  " for a batch of ", batch.size(0), "; Candela needs one output row per input row.");
  return out;
}

namespace {

// Which tensors the module holds and how often each was modified in place: a frozen copy made
// from other weights (a randomised layer, a reloaded state) must not be used.
std::string weights_fingerprint(const torch::jit::Module& m, const std::string& device) {
  std::ostringstream f;
  f << device << (m.is_training() ? "T" : "E");
  for (const auto& t : m.parameters()) f << ':' << t.unsafeGetTensorImpl() << '/' << t._version();
  for (const auto& t : m.buffers()) f << ':' << t.unsafeGetTensorImpl() << '/' << t._version();
  return f.str();
}

// Inputs the optimised copy is checked for: one dtype and one per-sample shape. A frozen
// convolution does not check its input's channels (it reads past the end of a wrong-sized one),
// so every new per-sample shape is first run through forward(), which names a bad shape.
std::string input_kind(const at::Tensor& x) {
  return str_cat(c10::toString(x.scalar_type()), shape_str(x.sizes().slice(std::min<size_t>(1, x.dim()))));
}

}  // namespace

std::shared_ptr<Model::Impl::Inference> Model::Impl::current_inference() {
  std::lock_guard<std::mutex> lock(inference_mutex);
  const std::string weights = weights_fingerprint(*module, device);
  if (!inference || inference->weights != weights) {
    auto fresh = std::make_shared<Impl::Inference>();
    fresh->weights = weights;
    try {
      torch::jit::Module copy = module->clone();
      copy.eval();
      torch::jit::Module frozen = torch::jit::freeze(copy);
      auto frozen_graph = frozen.get_method("forward").graph()->copy();
      fresh->module = torch::jit::optimize_for_inference(frozen);
      try {
        fresh->local = detail::LocalForward::build(frozen_graph, nullptr);
      } catch (const std::exception&) {
        fresh->local.reset();
      }
    } catch (const std::exception&) {
      fresh->module.reset();  // a module freezing cannot handle: forward() as it is
    }
    inference = fresh;
  }
  return inference;
}

at::Tensor Model::forward_inference(const at::Tensor& batch) const {
  at::NoGradGuard no_grad;
  if (!impl_->module || impl_->module->is_training() || std::getenv("CANDELA_NO_INFERENCE_GRAPH"))
    return forward(batch);
  // (Its check runs one row: arguments with a row per sample go through forward() as they are.)
  for (const auto& [name, t] : forward_args())
    if (t.size(0) > 1) return forward(batch);
  std::shared_ptr<Impl::Inference> inf = impl_->current_inference();
  std::string kind = input_kind(batch);
  for (const auto& [name, t] : forward_args()) kind += " " + name;
  bool check = false;
  {
    std::lock_guard<std::mutex> lock(impl_->inference_mutex);
    if (!inf->module || inf->refused.count(kind)) return forward(batch);
    check = !inf->checked.count(kind);
  }
  at::Tensor first;
  if (check) {
    if (batch.dim() == 0 || batch.size(0) == 0) return forward(batch);
    // (One row suffices: in eval mode rows do not interact.) A bad input throws here.
    first = forward(batch.slice(0, 0, 1));
  }
  at::Tensor out;
  try {
    std::vector<c10::IValue> in = {detail::model_input(batch, impl_->spec.layout == "NL")};
    if (impl_->extra_parameters) {
      auto extra = detail::all_forward_args(*this, batch.size(0), batch.device());
      in.insert(in.end(), extra.begin(), extra.end());
    }
    auto result = inf->module->forward(std::move(in));
    if (result.isTensor()) out = result.toTensor();
  } catch (const std::exception&) {
    out = at::Tensor();
  }
  bool agrees = out.defined() && out.dim() >= 1 && out.size(0) == batch.size(0);
  if (agrees && check) {
    // The optimised copy must give the same function, float32 rounding of folded weights apart.
    const at::Tensor mine = out.slice(0, 0, 1);
    const double scale = std::max(first.abs().max().item<double>(), 1e-6);
    agrees = mine.sizes() == first.sizes() &&
             (mine.to(first.scalar_type()) - first).abs().max().item<double>() <= 1e-4 * scale;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->inference_mutex);
    (agrees ? inf->checked : inf->refused).insert(kind);
  }
  if (agrees) return out;
  return forward(batch);  // forward() names a bad input's problem
}

at::Tensor Model::forward_local(const at::Tensor& batch, const at::Tensor& references, const at::Tensor& reference,
                                bool* local) const {
  at::NoGradGuard no_grad;
  if (local) *local = false;
  if (!references.defined() || batch.dim() != 4 || !impl_->module || impl_->module->is_training() ||
      !forward_args().empty() || std::getenv("CANDELA_NO_INFERENCE_GRAPH") || std::getenv("CANDELA_NO_LOCAL_FORWARD"))
    return forward_inference(batch);
  std::shared_ptr<Impl::Inference> inf = impl_->current_inference();
  const std::string kind = input_kind(batch);
  bool usable = false, check = false;
  {
    std::lock_guard<std::mutex> lock(impl_->inference_mutex);
    usable = inf->module && inf->local && !inf->local_refused.count(kind);
    check = !inf->local_checked.count(kind);
  }
  if (!usable) return forward_inference(batch);
  if (check) forward_inference(batch.slice(0, 0, 1));  // a bad input gets forward()'s error here
  at::Tensor out;
  try {
    out = inf->local->run(batch, references.to(batch.scalar_type()), reference.to(at::kLong));
  } catch (const std::exception&) {
    out = at::Tensor();
    std::lock_guard<std::mutex> lock(impl_->inference_mutex);
    inf->local_refused.insert(kind);
  }
  if (!out.defined() || out.dim() < 1 || out.size(0) != batch.size(0)) return forward_inference(batch);
  if (check) {
    // The cut graph must give the whole graph's outputs: the same operations on crops.
    const at::Tensor whole = forward_inference(batch);
    const double scale = std::max(whole.abs().max().item<double>(), 1e-6);
    const bool agrees = out.sizes() == whole.sizes() &&
                        (out.to(whole.scalar_type()) - whole).abs().max().item<double>() <= 1e-5 * scale;
    std::lock_guard<std::mutex> lock(impl_->inference_mutex);
    (agrees ? inf->local_checked : inf->local_refused).insert(kind);
    if (!agrees) return whole;
  }
  if (local) *local = true;
  return out;
}

std::vector<ForwardParameter> Model::forward_parameters() const {
  std::vector<ForwardParameter> out;
  if (!impl_->module) return out;
  const auto& args = impl_->module->get_method("forward").function().getSchema().arguments();
  for (size_t i = 2; i < args.size(); ++i)
    out.push_back({args[i].name(), args[i].type()->annotation_str(), args[i].default_value().has_value()});
  return out;
}

Model Model::with_forward_args(std::vector<std::pair<std::string, at::Tensor>> args) const {
  const auto params = forward_parameters();
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.name);
  if (!args.empty())
    CANDELA_CHECK(!params.empty(), impl_->module ? "the model's forward() takes only its input, so it takes no "
                  "forward argument such as '" + args[0].first + "'." : "a function model takes only its input, so it "
                  "takes no forward argument such as '" + args[0].first + "'.");
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  std::vector<std::pair<std::string, at::Tensor>> ordered;
  for (const auto& [name, t] : args) {
    auto p = std::find(names.begin(), names.end(), name);
    CANDELA_CHECK(p != names.end(), "the model's forward() has no parameter '", name, "'; it takes ", list,
                  " after its input.", did_you_mean(name, names));
    const auto& param = params[p - names.begin()];
    CANDELA_CHECK(param.type == "Tensor" || param.type == "Optional[Tensor]", "the model's forward() takes '", name,
                  "' as ", param.type, ", not a tensor; Candela passes tensors only.");
    CANDELA_CHECK(t.defined() && t.dim() >= 1 && t.size(0) >= 1, "the forward argument '", name,
                  "' must be a tensor with a batch dimension [N, ...] or [1, ...].");
    for (const auto& [other, _] : ordered)
      CANDELA_CHECK(other != name, "the forward argument '", name, "' is given twice.");
    ordered.emplace_back(name, t.detach());
  }
  std::sort(ordered.begin(), ordered.end(), [&](const auto& a, const auto& b) {
    return std::find(names.begin(), names.end(), a.first) < std::find(names.begin(), names.end(), b.first);
  });
  Model m = *this;
  m.forward_args_ = ordered.empty() ? nullptr
                                    : std::make_shared<const std::vector<std::pair<std::string, at::Tensor>>>(ordered);
  return m;
}

const std::vector<std::pair<std::string, at::Tensor>>& Model::forward_args() const {
  static const std::vector<std::pair<std::string, at::Tensor>> none;
  return forward_args_ ? *forward_args_ : none;
}

const InputSpec& Model::input_spec() const { return impl_->spec; }
void Model::set_input_spec(InputSpec spec) {
  spec.validate();
  impl_->spec = std::move(spec);
}
const std::vector<std::string>& Model::class_names() const { return impl_->classes; }
void Model::set_class_names(std::vector<std::string> names) { impl_->classes = std::move(names); }
const std::vector<std::string>& Model::feature_names() const { return impl_->features; }
const std::string& Model::name() const { return impl_->name; }
const std::string& Model::source() const { return impl_->source; }
const nlohmann::json& Model::tokenizer() const { return impl_->tokenizer; }
std::string Model::output_kind() const { return impl_->output_kind; }
torch::jit::Module* Model::module() const { return impl_->module ? &*impl_->module : nullptr; }
std::string Model::device() const { return impl_->device; }

void Model::to(const std::string& device) {
  c10::Device d(c10::kCPU);
  try {
    d = c10::Device(device);
  } catch (const c10::Error&) {
    throw InvalidArgument(str_cat("unknown device '", device, "'; use cpu, cuda, cuda:N or mps."));
  }
  if (impl_->module) {
    try {
      impl_->module->to(d);
    } catch (const c10::Error& e) {
      throw InvalidArgument(str_cat("cannot move the model to '", device, "': ", torch_message(e), "."));
    }
  }
  impl_->device = d.str();
}

// Runs the forward graph once with every intermediate value as an output: that gives each
// submodule's output shape (the last value computed inside its scope) and the activation
// memory one sample needs, which the evaluator uses to size batches.
void Model::Impl::probe(const Model& model) {
  if (!module || spec.shape.empty()) return;
  try {
    // The forward as it runs, in-place operations included (inlined_forward would make each a
    // new tensor): an activation that relu_ or add_ overwrites is counted once, by its storage.
    // Specialised on the forward arguments the asking model was given, as layer taps are.
    auto graph = module->get_method("forward").graph()->copy();
    torch::jit::Inline(*graph);
    detail::specialise_forward_args(graph, model);
    auto lo = detail::layer_outputs(*graph);
    const auto& values = lo.tensors;
    for (size_t i = graph->outputs().size(); i > 0; --i) graph->eraseOutput(i - 1);
    auto* tuple = graph->insertNode(graph->createTuple(values));
    graph->registerOutput(tuple->output());
    torch::jit::GraphFunction fn("candela_probe", graph, nullptr);
    std::vector<int64_t> shape = {1};
    shape.insert(shape.end(), spec.shape.begin(), spec.shape.end());
    torch::NoGradGuard no_grad;
    std::vector<c10::IValue> in = {
        module->_ivalue(),
        detail::model_input(at::zeros(shape, at::TensorOptions().device(c10::Device(device))), spec.layout == "NL")};
    for (const auto& [name, t] : model.forward_args()) in.emplace_back(t.slice(0, 0, 1).to(c10::Device(device)));
    auto out = fn(std::move(in));
    auto elems = out.toTupleRef().elements();
    std::map<torch::jit::Value*, at::Tensor> by_value;
    std::set<const void*> storages;
    for (size_t i = 0; i < values.size(); ++i) {
      if (!elems[i].isTensor()) continue;
      auto t = elems[i].toTensor();
      by_value[values[i]] = t;
      if (t.has_storage() && storages.insert(t.storage().unsafeGetStorageImpl()).second)
        activation_bytes += static_cast<int64_t>(t.storage().nbytes());
    }
    std::map<torch::jit::Value*, int64_t> position;  // lo.tensors is in the order the graph computes them
    for (size_t i = 0; i < values.size(); ++i) position.emplace(values[i], static_cast<int64_t>(i));
    for (const auto& name : lo.order) {
      LayerInfo info{name, lo.type[name], {}, lo.calls[name]};
      if (auto p = position.find(lo.value[name]); p != position.end()) info.position = p->second;
      auto it = by_value.find(lo.value[name]);
      if (it != by_value.end()) info.output_shape.assign(it->second.sizes().begin(), it->second.sizes().end());
      layers.push_back(std::move(info));
    }
  } catch (const std::exception& e) {
    probe_error = e.what();
    layers.clear();
    activation_bytes = 0;
  }
}

std::vector<LayerInfo> Model::layers() const {
  CANDELA_CHECK(!impl_->spec.shape.empty(), "listing layers needs the input shape: pass --input-shape or add "
                "\"input\": {\"shape\": [...]} to the model's .json sidecar.");
  std::call_once(impl_->probed, [this] { impl_->probe(*this); });
  CANDELA_CHECK_T(UnsupportedModel, impl_->probe_error.empty(), "could not run the model on a zero input of shape ",
                  shape_str(impl_->spec.shape), ": ", impl_->probe_error);
  return impl_->layers;
}

std::shared_ptr<void> Model::cached(const std::string& key,
                                   const std::function<std::shared_ptr<void>()>& make) const {
  std::string full = key;
  for (const auto& [name, t] : forward_args()) full += "\nforward arg: " + name;  // graphs are specialised on them
  std::lock_guard<std::mutex> lock(impl_->cache_mutex);
  auto& slot = impl_->cache[full];
  if (!slot) slot = make();
  return slot;
}

int64_t Model::activation_bytes_per_sample() const {
  std::call_once(impl_->probed, [this] { impl_->probe(*this); });
  return impl_->activation_bytes;
}

// ---- ModelGuard ----------------------------------------------------------------------

namespace detail {

bool per_sample_forward_args(const Model& model, int64_t samples) {
  bool per_sample = false;
  for (const auto& [arg, t] : model.forward_args())
    if (t.size(0) > 1) {
      CANDELA_CHECK_T(ShapeMismatch, t.size(0) == samples, "the forward argument '", arg, "' has ", t.size(0),
                      " rows but there are ", samples, " samples: give one row per sample, or one row for all of them.");
      per_sample = true;
    }
  return per_sample;
}

Model forward_args_of_samples(const Model& model, int64_t begin, int64_t end) {
  std::vector<std::pair<std::string, at::Tensor>> args;
  for (const auto& [arg, t] : model.forward_args()) args.emplace_back(arg, t.size(0) > 1 ? t.slice(0, begin, end) : t);
  return model.with_forward_args(std::move(args));
}

ModelGuard::ModelGuard(const Model& model) : module_(model.module()) {
  if (!module_) return;
  // Touch only what differs: explanations run often, and train() walks every submodule.
  for (const auto& m : module_->modules()) {
    if (m.type()->hasAttribute("training") && m.is_training()) {
      m._ivalue()->setAttr("training", false);
      was_training_.push_back(m._ivalue());
    }
  }
  for (auto p : module_->parameters()) {
    if (!p.requires_grad()) {
      p.set_requires_grad(true);
      no_grad_.push_back(p);
    }
  }
}

ModelGuard::~ModelGuard() {
  for (auto& m : was_training_) m->setAttr("training", true);
  for (auto& p : no_grad_) p.set_requires_grad(false);
}

}  // namespace detail
}  // namespace candela
