// The Python module `candela._candela`: the engine's few entry points, called by the pure-Python
// package next to it (python/candela/), which gives them Captum's names and call shapes.
//
// Tensors cross without copies: Debian's python3-torch and libtorch-dev share one libtorch_cpu,
// so a torch.Tensor is an at::Tensor (pybind's caster from torch/csrc/utils/pybind.h). Every
// call releases the GIL while the engine runs; a model that is a Python callable (a plain
// nn.Module) takes it back for each forward pass, and autograd flows through it as usual.
#include <torch/csrc/jit/python/module_python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <memory>
#include <string>

#include "candela/candela.h"

namespace py = pybind11;
using nlohmann::json;

namespace candela {
namespace {

// A model from Python: a file path, a ScriptModule (shared with the caller), or any callable
// [N, ...] -> [N, C] (called back under the GIL). `spec` fills what the model does not say.
Model make_model(const py::object& obj, const std::string& spec_json, const std::string& name) {
  InputSpec spec;
  if (!spec_json.empty()) spec = InputSpec::from_json(json::parse(spec_json), "the input spec");
  if (py::isinstance<py::str>(obj)) {
    Model m = Model::load(obj.cast<std::string>());
    InputSpec s = m.input_spec();
    if (s.shape.empty()) s.shape = spec.shape;
    if (s.layout.empty()) s.layout = spec.layout;
    m.set_input_spec(s);
    return m;
  }
  if (auto module = torch::jit::as_module(obj)) return Model::from_module(*module, spec);
  CANDELA_CHECK_T(UnsupportedModel, PyCallable_Check(obj.ptr()),
                  "the model must be a torch.nn.Module, a torch.jit.ScriptModule, a callable or a path to a "
                  ".pt/.onnx file, got ", py::str(py::type::of(obj)).cast<std::string>(), ".");
  // The callable is released under the GIL, whichever thread drops the last copy.
  std::shared_ptr<py::object> fn(new py::object(obj), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
  return Model::from_function(
      [fn](const at::Tensor& x) -> at::Tensor {
        py::gil_scoped_acquire gil;
        try {
          py::object out = (*fn)(x);
          CANDELA_CHECK_T(UnsupportedModel, THPVariable_Check(out.ptr()), "the model returned a ",
                          py::str(py::type::of(out)).cast<std::string>(),
                          ", not a tensor. Candela explains one output tensor: wrap the model so it returns one.");
          return THPVariable_Unpack(out.ptr());
        } catch (py::error_already_set& e) {
          throw InvalidArgument(std::string("the model's forward raised ") + e.what());
        }
      },
      spec, name);
}

Baseline make_baseline(const std::string& kind, const py::object& value) {
  if (kind == "tensor") return Baseline::tensor(value.cast<at::Tensor>());
  if (kind == "distribution") return Baseline::distribution(value.cast<at::Tensor>());
  return Baseline::parse(value.cast<std::string>());
}

py::object tensor_or_none(const at::Tensor& t) { return t.defined() ? py::cast(t) : py::none(); }

// Progress from the engine's thread into a Python callable (stage, done, total), under the GIL.
ProgressCallback make_progress(const py::object& progress) {
  if (progress.is_none()) return {};
  auto fn = std::shared_ptr<py::object>(new py::object(progress), [](py::object* p) {
    py::gil_scoped_acquire gil;
    delete p;
  });
  return [fn](const Progress& p) {
    py::gil_scoped_acquire gil;
    try {
      (*fn)(p.stage, p.done, p.total);
    } catch (py::error_already_set& e) {
      throw Cancelled(std::string("the progress callback raised ") + e.what());
    }
  };
}

class PyModel {
 public:
  PyModel(const py::object& obj, const std::string& spec_json, const std::string& name)
      : model_(make_model(obj, spec_json, name)) {}
  const Model& model() const { return model_; }
  Model& model() { return model_; }

 private:
  Model model_;
};

py::dict explain(PyModel& pm, const at::Tensor& inputs, const std::string& method, const std::string& options_json,
                 const std::string& target, const std::string& baseline_kind, const py::object& baseline,
                 const py::object& feature_mask, double max_memory, int64_t batch_size, const py::object& progress,
                 const std::vector<std::pair<std::string, at::Tensor>>& forward_args) {
  const MethodInfo& info = Registry::builtin().get(method);
  auto explainer = info.create(json::parse(options_json));
  const Model model = pm.model().with_forward_args(forward_args);
  ExplainRequest req;
  req.inputs = inputs;
  // Token models: a language-model target may take its token from the input (logprob:POS) and
  // name tokens by vocabulary string.
  const bool tokens = pm.model().input_spec().layout == "NL";
  std::vector<std::string> names = pm.model().class_names();
  if (names.empty() && tokens) names = model_vocabulary(pm.model());
  req.target = Target::parse(tokens ? fill_target_tokens(target, inputs) : target, names);
  req.baseline = make_baseline(baseline_kind, baseline);
  if (!feature_mask.is_none()) req.feature_mask = feature_mask.cast<at::Tensor>();
  req.eval.max_memory_mb = max_memory;
  req.eval.max_batch_size = batch_size;
  req.eval.progress = make_progress(progress);
  Attribution a;
  {
    py::gil_scoped_release nogil;
    a = explainer->explain(model, req);
  }
  py::dict out;
  out["values"] = a.values;
  out["output"] = tensor_or_none(a.output);
  out["convergence_delta"] = tensor_or_none(a.convergence_delta);
  out["output_change"] = tensor_or_none(a.output_change);
  out["metadata"] = a.metadata().dump();
  return out;
}

// One metric on given attributions; `method`/`method_options` re-explain for the metrics that need it.
py::dict score_metric(PyModel& pm, const std::string& metric, const std::string& options_json,
                      const at::Tensor& inputs, const at::Tensor& attributions, const at::Tensor& targets,
                      const py::object& masks, const std::string& method, const std::string& method_options,
                      const std::string& baseline_kind, const py::object& baseline, double max_memory,
                      int64_t batch_size) {
  const auto& info = MetricRegistry::builtin().get(metric);
  auto m = info.create(json::parse(options_json));
  std::unique_ptr<Explainer> explainer;
  if (!method.empty()) explainer = Registry::builtin().get(method).create(json::parse(method_options));
  CANDELA_CHECK(explainer || !m->needs_explainer(), "the metric ", metric,
                " explains again under perturbations: give method= (and method_options=) as well.");
  CANDELA_CHECK(!masks.is_none() || !m->needs_masks(), "the metric ", metric,
                " compares with ground truth: give masks= (nonzero = relevant).");
  MetricInput in;
  in.model = &pm.model();
  in.inputs = inputs;
  in.attributions = attributions;
  in.targets = targets;
  if (!masks.is_none()) in.masks = masks.cast<at::Tensor>();
  in.explainer = explainer.get();
  in.eval.max_memory_mb = max_memory;
  in.eval.max_batch_size = batch_size;
  in.request.baseline = make_baseline(baseline_kind, baseline);
  in.request.eval = in.eval;
  json details = json::object();
  at::Tensor scores;
  {
    py::gil_scoped_release nogil;
    scores = m->score(in, &details);
  }
  py::dict out;
  out["scores"] = scores;
  out["details"] = details.dump();
  out["higher_is_better"] = m->higher_is_better();
  return out;
}

// The app layer's jobs from JSON (the server's request bodies): explain, evaluate, audit, info, robustness,
// counterfactual, visualize, tcav, crp, craft.
std::string run_job(const std::string& kind, const std::string& body) {
  const json j = json::parse(body);
  py::gil_scoped_release nogil;
  if (kind == "evaluate") return run(job_from_json<EvaluateJob>(j, "the evaluate job")).dump();
  if (kind == "audit") return run(job_from_json<AuditJob>(j, "the audit job")).dump();
  if (kind == "info") return run(job_from_json<InfoJob>(j, "the info job")).dump();
  if (kind == "explain") {
    ExplainResult r = run(job_from_json<ExplainJob>(j, "the explain job"));
    json out = r.attribution.metadata();
    out["files"] = r.files;
    return out.dump();
  }
  if (kind == "robustness") {
    RobustnessJobResult r = run(job_from_json<RobustnessJob>(j, "the robustness job"));
    json out = r.result.report;
    out["files"] = r.files;
    return out.dump();
  }
  if (kind == "counterfactual") {
    CounterfactualJobResult r = run(job_from_json<CounterfactualJob>(j, "the counterfactual job"));
    json out = r.result.report;
    out["files"] = r.files;
    return out.dump();
  }
  if (kind == "visualize") {
    VisualizeResult r = run(job_from_json<VisualizeJob>(j, "the visualize job"));
    json out = r.report;
    out["files"] = r.files;
    return out.dump();
  }
  if (kind == "tcav") return run(job_from_json<TcavJob>(j, "the tcav job")).dump();
  if (kind == "crp") return run(job_from_json<CrpJob>(j, "the crp job")).dump();
  if (kind == "craft") {
    CraftJobResult r = run(job_from_json<CraftJob>(j, "the craft job"));
    json out = r.report;
    out["files"] = r.files;
    return out.dump();
  }
  throw InvalidArgument("unknown job '" + kind +
                        "': explain, evaluate, audit, info, robustness, counterfactual, visualize, tcav, crp or craft.");
}

}  // namespace
}  // namespace candela

PYBIND11_MODULE(_candela, m) {
  using namespace candela;
  m.doc() = "Candela's engine (C++). Use the `candela` package, not this module.";
  // Errors keep the CLI's one-line messages; bad arguments are ValueError, bad models TypeError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UnsupportedModel& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const Cancelled& e) {
      PyErr_SetString(PyExc_KeyboardInterrupt, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const InternalError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (const Error& e) {  // InvalidArgument, ShapeMismatch, ParseError
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const json::exception& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  py::class_<PyModel>(m, "Model")
      .def(py::init<const py::object&, const std::string&, const std::string&>(), py::arg("model"),
           py::arg("spec") = "", py::arg("name") = "module")
      .def("spec", [](const PyModel& pm) { return pm.model().input_spec().to_json().dump(); })
      .def("set_spec",
           [](PyModel& pm, const std::string& s) {
             pm.model().set_input_spec(InputSpec::from_json(json::parse(s), "the input spec"));
           })
      .def("set_class_names", [](PyModel& pm, std::vector<std::string> names) { pm.model().set_class_names(names); })
      .def("is_module", [](const PyModel& pm) { return pm.model().module() != nullptr; })
      .def("layers", [](const PyModel& pm) {
        std::vector<LayerInfo> layers;
        {
          py::gil_scoped_release nogil;
          layers = pm.model().layers();
        }
        py::list out;
        for (const auto& l : layers) out.append(py::make_tuple(l.name, l.type, l.output_shape));
        return out;
      });
  m.def("methods_json", [] { return Registry::builtin().to_json().dump(); });
  m.def("metrics_json", [] { return MetricRegistry::builtin().to_json().dump(); });
  // One entry; an unknown name raises the CLI's message with the closest names.
  m.def("method_json", [](const std::string& name) {
    Registry::builtin().get(name);
    for (const auto& j : Registry::builtin().to_json())
      if (j.value("name", "") == name) return j.dump();
    return std::string("{}");
  });
  m.def("metric_json", [](const std::string& name) {
    MetricRegistry::builtin().get(name);
    for (const auto& j : MetricRegistry::builtin().to_json())
      if (j.value("name", "") == name) return j.dump();
    return std::string("{}");
  });
  // An image, .npy or .csv read as the CLI reads it, with the model's input spec.
  m.def("load_input", [](PyModel& pm, const std::string& path) {
    py::gil_scoped_release nogil;
    return load_input(path, pm.model().input_spec()).batch;
  });
  m.def("default_eval", [] { return json{{"max_memory_mb", EvalOptions{}.max_memory_mb}}.dump(); });
  m.def("predict", [](PyModel& pm, const at::Tensor& inputs) {
    py::gil_scoped_release nogil;
    check_inputs(pm.model(), inputs);
    return pm.model().forward_inference(inputs);
  });
  m.def("explain", &explain, py::arg("model"), py::arg("inputs"), py::arg("method"), py::arg("options"),
        py::arg("target"), py::arg("baseline_kind"), py::arg("baseline"), py::arg("feature_mask"),
        py::arg("max_memory"), py::arg("batch_size"), py::arg("progress"), py::arg("forward_args"));
  m.def("forward_parameters", [](PyModel& pm) {
    std::vector<std::string> names;
    for (const auto& p : pm.model().forward_parameters()) names.push_back(p.name);
    return names;
  });
  m.def("score_metric", &score_metric);
  m.def("run_job", &run_job, py::arg("kind"), py::arg("body"));
  m.def("set_num_threads", [](int n) { at::set_num_threads(n); });
  m.def("reuse_freed_memory", &candela::reuse_freed_memory);
}
