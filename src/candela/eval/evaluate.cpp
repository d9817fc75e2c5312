#include "candela/eval/evaluate.h"

#include <ATen/ATen.h>
#include <opencv2/core.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <random>
#include <set>
#include <sstream>

#include "candela/core/registry.h"
#include "candela/core/target.h"
#include "candela/detail/forward_args.h"
#include "candela/detail/model_guard.h"
#include "candela/detail/tensor_util.h"
#include "candela/eval/metrics.h"
#include "candela/io/file.h"
#include "candela/render/export.h"

namespace candela {
using detail::str_cat;
namespace fs = std::filesystem;

void EvaluateConfig::validate() const {
  CANDELA_CHECK(!methods.empty(), "give at least one method to evaluate (--methods a,b).");
  CANDELA_CHECK(!metrics.empty(), "give at least one metric (--metrics x,y; `candela metrics` lists them).");
  for (const auto& m : methods) Registry::builtin().get(m);
  for (const auto& m : metrics) MetricRegistry::builtin().get(m);
  for (const auto& [k, v] : method_options)
    CANDELA_CHECK(std::find(methods.begin(), methods.end(), k) != methods.end(), "options are given for method '", k,
                  "', which is not among --methods.");
  for (const auto& [k, v] : metric_options)
    CANDELA_CHECK(std::find(metrics.begin(), metrics.end(), k) != metrics.end(), "options are given for metric '", k,
                  "', which is not among --metrics.");
  CANDELA_CHECK(std::set<std::string>(methods.begin(), methods.end()).size() == methods.size(),
                "a method is listed twice.");
  CANDELA_CHECK(std::set<std::string>(metrics.begin(), metrics.end()).size() == metrics.size(),
                "a metric is listed twice.");
  CANDELA_CHECK(chunk >= 1, "chunk must be >= 1, got ", chunk, ".");
  CANDELA_CHECK(bootstrap >= 0, "bootstrap must be >= 0, got ", bootstrap, ".");
}

std::array<double, 3> bootstrap_mean(const std::vector<double>& values, int64_t resamples, uint64_t seed) {
  std::vector<double> v;
  for (double x : values)
    if (std::isfinite(x)) v.push_back(x);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (v.empty()) return {nan, nan, nan};
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  if (resamples == 0 || v.size() == 1) return {mean, mean, mean};
  std::mt19937_64 rng(seed);
  // mt19937_64's stream is the same with every standard library; std::uniform_int_distribution is not.
  auto pick = [&](std::mt19937_64& r) { return static_cast<size_t>(r() % v.size()); };
  std::vector<double> means(resamples);
  for (int64_t b = 0; b < resamples; ++b) {
    double s = 0;
    for (size_t i = 0; i < v.size(); ++i) s += v[pick(rng)];
    means[b] = s / static_cast<double>(v.size());
  }
  std::sort(means.begin(), means.end());
  auto at = [&](double q) {
    const double pos = q * static_cast<double>(resamples - 1);
    const auto lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, means.size() - 1);
    return means[lo] + (pos - static_cast<double>(lo)) * (means[hi] - means[lo]);
  };
  return {mean, at(0.025), at(0.975)};
}

namespace {

// A metric's per-sample curves [[...], ...] as numbers; a missing value (null) is NaN.
std::vector<std::vector<double>> curve_rows(const nlohmann::json& j) {
  std::vector<std::vector<double>> rows;
  for (const auto& r : j) {
    std::vector<double> v;
    if (r.is_array())
      for (const auto& e : r) v.push_back(e.is_number() ? e.get<double>() : std::nan(""));
    rows.push_back(std::move(v));
  }
  return rows;
}

using Clock = std::chrono::steady_clock;

uint64_t fnv(const std::string& s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string fingerprint(const at::Tensor& t) {
  if (!t.defined()) return "none";
  const at::Tensor d = t.to(at::kCPU, at::kDouble).reshape({-1});
  const at::Tensor w = at::arange(d.numel(), at::TensorOptions().dtype(at::kDouble)).remainder(97).add(1);
  std::ostringstream s;
  s << detail::shape_str(t.sizes()) << ":" << std::setprecision(17) << d.sum().item<double>() << ":"
    << (d * w).sum().item<double>();
  return s.str();
}

at::Tensor top1(const Model& model, const at::Tensor& x, const EvalOptions& eval) {
  return detail::predict_rows(model, eval, x.size(0), [&](int64_t b, int64_t e) { return x.slice(0, b, e); },
                              "evaluate: predictions");
}

std::string number(double v) {
  if (!std::isfinite(v)) return "nan";
  std::ostringstream s;
  s << std::setprecision(10) << v;
  return s.str();
}

// summary.md: one row per metric, one column per method: mean [95% interval] (rank).
std::string summary_markdown(const nlohmann::json& summary, const std::vector<std::string>& methods,
                             const std::vector<std::string>& metrics) {
  std::ostringstream md;
  md << "| metric | better | " ;
  for (const auto& m : methods) md << m << " | ";
  md << "\n|---|---|";
  for (size_t i = 0; i < methods.size(); ++i) md << "---|";
  md << "\n";
  for (const auto& metric : metrics) {
    const auto& s = summary[metric];
    md << "| " << metric << " | " << (s["higher_is_better"].get<bool>() ? "higher" : "lower") << " | ";
    for (const auto& m : methods) {
      const auto& r = s["methods"][m];
      if (r["mean"].is_null()) {
        md << "n/a | ";
        continue;
      }
      md << std::setprecision(3) << r["mean"].get<double>() << " [" << r["ci95"][0].get<double>() << ", "
         << r["ci95"][1].get<double>() << "] (" << r["rank"].get<int64_t>() << ") | ";
    }
    md << "\n";
  }
  return md.str();
}

}  // namespace

nlohmann::json evaluate(const Model& model, const EvaluateData& data, const EvaluateConfig& config,
                        const std::string& out) {
  config.validate();
  const at::Tensor& x = data.inputs;
  CANDELA_CHECK(x.defined() && x.dim() >= 1 && x.size(0) > 0, "the data set is empty: give at least one sample.");
  const int64_t n = x.size(0);
  CANDELA_CHECK(data.ids.empty() || static_cast<int64_t>(data.ids.size()) == n, "got ", data.ids.size(),
                " sample names for ", n, " samples.");
  CANDELA_CHECK(!data.labels.defined() || data.labels.numel() == n, "got ", data.labels.numel(), " labels for ", n,
                " samples; give one class per sample.");
  CANDELA_CHECK_T(ShapeMismatch, !data.masks.defined() || (data.masks.dim() >= 1 && data.masks.size(0) == n), "got ",
                  data.masks.defined() ? data.masks.size(0) : 0, " masks for ", n, " samples; give one mask per sample.");
  std::vector<std::unique_ptr<Metric>> metrics;
  for (const auto& name : config.metrics) {
    auto it = config.metric_options.find(name);
    metrics.push_back(MetricRegistry::builtin().create(name, it == config.metric_options.end() ? nlohmann::json::object()
                                                                                                : it->second));
    CANDELA_CHECK(!metrics.back()->needs_masks() || data.masks.defined(), "metric ", name,
                  " compares with ground-truth masks: give --masks (one mask per sample).");
  }
  // Masks must match the maps before anything runs (the first chunk would find out late).
  if (data.masks.defined()) {
    const FeatureMap probe = feature_map(at::zeros_like(x.slice(0, 0, 1)), x.slice(0, 0, 1), model.input_spec());
    CANDELA_CHECK_T(ShapeMismatch, data.masks[0].numel() == probe.values.size(1), "each mask has ",
                    data.masks[0].numel(), " elements (shape ", detail::shape_str(data.masks.sizes()),
                    ") but the attribution maps have ", probe.values.size(1),
                    probe.image ? str_cat(" (", probe.height, "x", probe.width, ")") : std::string(),
                    "; give masks of the input's height and width.");
  }
  // Forward arguments with a row per sample (an attention mask per sentence): each sample is a
  // chunk of its own, and its explanations and metrics see the model with its own row, which
  // broadcasts to every perturbed row a metric makes.
  const bool per_sample = detail::per_sample_forward_args(model, n);
  auto model_for = [&](int64_t b, int64_t e) { return per_sample ? detail::forward_args_of_samples(model, b, e) : model; };
  const int64_t chunk = per_sample ? 1 : config.chunk;
  std::vector<std::unique_ptr<Explainer>> methods;
  for (const auto& name : config.methods) {
    auto it = config.method_options.find(name);
    methods.push_back(Registry::builtin().create(name, it == config.method_options.end() ? nlohmann::json::object()
                                                                                          : it->second));
  }
  {
    // The inference graph and the batch sizes, in the state explanations run in, before any
    // method's time is counted.
    const Model first = model_for(0, 1);
    detail::ModelGuard guard(first);
    Evaluator(first, config.eval).warm_up();
  }
  at::Tensor targets;
  if (data.labels.defined()) {
    targets = data.labels.to(at::kCPU, at::kLong).reshape({-1});
  } else if (!per_sample) {
    targets = top1(model, x, config.eval);
  } else {
    std::vector<at::Tensor> each;
    for (int64_t i = 0; i < n; ++i) each.push_back(top1(model_for(i, i + 1), x.slice(0, i, i + 1), config.eval));
    targets = at::cat(each);
  }
  std::vector<std::string> ids = data.ids;
  if (ids.empty())
    for (int64_t i = 0; i < n; ++i) ids.push_back(std::to_string(i));

  nlohmann::json settings = {
      {"model", model.source()},
      {"methods", config.methods},
      {"metrics", config.metrics},
      {"method_options", nlohmann::json::object()},
      {"metric_options", nlohmann::json::object()},
      {"baseline", config.baseline.describe()},
      {"chunk", chunk},
      {"seed", config.seed},
      {"data", {{"samples", n}, {"inputs", fingerprint(x)}, {"labels", fingerprint(data.labels)},
                {"masks", fingerprint(data.masks)}}}};
  for (const auto& [arg, t] : model.forward_args()) settings["forward_args"][arg] = fingerprint(t);
  for (size_t i = 0; i < methods.size(); ++i) settings["method_options"][config.methods[i]] = methods[i]->options();
  for (size_t i = 0; i < metrics.size(); ++i) settings["metric_options"][config.metrics[i]] = metrics[i]->options();

  fs::create_directories(out);
  const std::string run_file = out + "/run.json", journal_file = out + "/journal.jsonl";
  if (fs::exists(run_file)) {
    nlohmann::json previous;
    try {
      previous = nlohmann::json::parse(read_file(run_file, 1 << 22));
    } catch (const nlohmann::json::exception&) {
      throw ParseError(str_cat(run_file, " is not valid JSON; delete the folder or use another --out."));
    }
    CANDELA_CHECK(previous == settings, "'", out, "' holds a run with other settings (model, data, methods, metrics ",
                  "or options); resume with the same ones, or use another --out.");
  } else {
    write_file_atomic(run_file, settings.dump(2));
  }
  // The journal: one finished (chunk, method, metric) per line; a torn last line is ignored.
  std::map<std::string, std::vector<double>> done;
  // Per-sample curves of the metrics that have them (deletion, insertion, ...): summed per
  // (method, metric) for the mean curve in the summary.
  std::map<std::string, std::vector<std::vector<double>>> curves;
  auto key = [](int64_t c, const std::string& m, const std::string& k) { return str_cat(c, "/", m, "/", k); };
  if (fs::exists(journal_file)) {
    std::ifstream in(journal_file);
    std::string line;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        std::vector<double> v;
        for (const auto& e : j.at("values")) v.push_back(e.is_null() ? std::nan("") : e.get<double>());
        done[key(j.at("chunk").get<int64_t>(), j.at("method"), j.at("metric"))] = v;
        if (j.contains("curve")) curves[key(j.at("chunk").get<int64_t>(), j.at("method"), j.at("metric"))] = curve_rows(j["curve"]);
      } catch (const nlohmann::json::exception&) {
        // an interrupted write: that entry is simply computed again
      }
    }
  }
  std::ofstream journal(journal_file, std::ios::app);
  CANDELA_CHECK_T(IoError, journal.good(), "cannot write '", journal_file, "'. Check the folder's permissions.");

  const int64_t chunks = (n + chunk - 1) / chunk;
  const int64_t total = chunks * static_cast<int64_t>(methods.size());
  int64_t finished = 0, computed = 0;
  const auto start = Clock::now();
  auto report = [&](const std::string& stage) {
    if (!config.progress) return;
    EvaluateProgress p;
    p.done = finished;
    p.total = total;
    p.stage = stage;
    p.elapsed_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (computed > 0) p.remaining_seconds = p.elapsed_seconds / static_cast<double>(computed) * (total - finished);
    config.progress(p);
  };
  report("evaluate");
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * chunk, e = std::min(n, b + chunk);
    const Model chunk_model = model_for(b, e);
    for (size_t mi = 0; mi < methods.size(); ++mi) {
      const std::string& method = config.methods[mi];
      std::vector<size_t> missing;
      for (size_t ki = 0; ki < metrics.size(); ++ki)
        if (!done.count(key(c, method, config.metrics[ki]))) missing.push_back(ki);
      if (!missing.empty()) {
        if (config.eval.cancel.cancelled()) throw Cancelled("evaluation cancelled; run it again to resume.");
        ExplainRequest req;
        req.inputs = x.slice(0, b, e);
        req.target = detail::class_target(targets.slice(0, b, e));
        req.baseline = config.baseline;
        req.eval = config.eval;
        req.eval.progress = nullptr;
        const auto explain_start = Clock::now();
        const Attribution a = methods[mi]->explain(chunk_model, req);
        if (config.timing)
          config.timing(method, e - b, std::chrono::duration<double>(Clock::now() - explain_start).count());
        for (size_t ki : missing) {
          MetricInput in;
          in.model = &chunk_model;
          in.inputs = req.inputs;
          in.attributions = a.values;
          in.targets = targets.slice(0, b, e).contiguous();
          if (data.masks.defined()) in.masks = data.masks.slice(0, b, e);
          in.explainer = methods[mi].get();
          in.request = req;
          in.eval = req.eval;
          nlohmann::json details;
          const at::Tensor s = metrics[ki]->score(in, &details).to(at::kCPU, at::kDouble).contiguous();
          std::vector<double> v(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
          nlohmann::json values = nlohmann::json::array();
          for (double d : v) values.push_back(std::isfinite(d) ? nlohmann::json(d) : nlohmann::json());
          nlohmann::json line = {{"chunk", c}, {"method", method}, {"metric", config.metrics[ki]}, {"values", values}};
          if (details.is_object() && details.contains("curve") && details["curve"].is_array()) {
            line["curve"] = details["curve"];
            curves[key(c, method, config.metrics[ki])] = curve_rows(details["curve"]);
          }
          journal << line.dump() << "\n";
          journal.flush();
          CANDELA_CHECK_T(IoError, journal.good(), "writing '", journal_file, "' failed (disk full?).");
          done[key(c, method, config.metrics[ki])] = v;
        }
        ++computed;
      }
      ++finished;
      report(method);
    }
  }

  // Results, summary and ranking.
  std::vector<std::vector<std::string>> csv = {{"sample", "method", "metric", "value"}};
  nlohmann::json summary = nlohmann::json::object();
  for (size_t ki = 0; ki < metrics.size(); ++ki) {
    const std::string& metric = config.metrics[ki];
    nlohmann::json per = nlohmann::json::object();
    std::vector<std::pair<double, std::string>> order;
    for (const auto& method : config.methods) {
      std::vector<double> all;
      for (int64_t c = 0; c < chunks; ++c) {
        const auto& v = done.at(key(c, method, metric));
        all.insert(all.end(), v.begin(), v.end());
      }
      const auto ci = bootstrap_mean(all, config.bootstrap, static_cast<uint64_t>(config.seed) ^ fnv(method + "/" + metric));
      int64_t count = 0;
      for (double d : all) count += std::isfinite(d);
      per[method] = {{"mean", std::isfinite(ci[0]) ? nlohmann::json(ci[0]) : nlohmann::json()},
                     {"ci95", {std::isfinite(ci[1]) ? nlohmann::json(ci[1]) : nlohmann::json(),
                               std::isfinite(ci[2]) ? nlohmann::json(ci[2]) : nlohmann::json()}},
                     {"n", count}};
      if (std::isfinite(ci[0])) order.emplace_back(metrics[ki]->higher_is_better() ? -ci[0] : ci[0], method);
    }
    std::stable_sort(order.begin(), order.end());
    nlohmann::json ranking = nlohmann::json::array();
    for (size_t r = 0; r < order.size(); ++r) {
      ranking.push_back(order[r].second);
      per[order[r].second]["rank"] = r + 1;
    }
    summary[metric] = {{"higher_is_better", metrics[ki]->higher_is_better()}, {"methods", per}, {"ranking", ranking}};
    // The mean curve over the samples (deletion, insertion, region perturbation): points at
    // evenly spaced fractions from 0 to 1, as the metric evaluated them.
    for (const auto& method : config.methods) {
      std::vector<double> sum;
      int64_t rows = 0;
      for (int64_t c = 0; c < chunks; ++c) {
        auto it = curves.find(key(c, method, metric));
        if (it == curves.end()) continue;
        for (const auto& r : it->second) {
          if (sum.empty()) sum.assign(r.size(), 0.0);
          if (r.size() != sum.size()) continue;
          for (size_t t = 0; t < r.size(); ++t) sum[t] += r[t];
          ++rows;
        }
      }
      if (rows == 0) continue;
      for (double& t : sum) t /= static_cast<double>(rows);
      summary[metric]["methods"][method]["curve"] = sum;
    }
  }
  for (int64_t i = 0; i < n; ++i)
    for (const auto& method : config.methods)
      for (const auto& metric : config.metrics)
        csv.push_back({ids[i], method, metric, number(done.at(key(i / chunk, method, metric))[i % chunk])});

  nlohmann::json result = {{"settings", settings}, {"summary", summary}};
  write_artifacts(out, {render_csv("results.csv", csv),
                        render_markdown("summary.md", summary_markdown(summary, config.methods, config.metrics)),
                        render_json("results.json", result)});
  return result;
}

// ---- shortcut audit ------------------------------------------------------------------------

nlohmann::json audit_shortcuts(const Model& model, const EvaluateData& data, const AuditConfig& config) {
  const at::Tensor& x = data.inputs;
  CANDELA_CHECK(x.defined() && x.size(0) >= 2, "the audit needs a data set of at least 2 samples.");
  const InputSpec& spec = model.input_spec();
  CANDELA_CHECK(x.dim() == 4 && (spec.layout == "NCHW" || spec.layout == "NHWC"),
                "the shortcut audit looks for image regions: it needs image inputs [N, C, H, W] or [N, H, W, C]; got shape ",
                detail::shape_str(x.sizes()), " and layout '", spec.layout,
                "'. Give the layout with --layout NCHW (or NHWC), or add \"input\" to the model's .json.");
  CANDELA_CHECK(config.window > 0 && config.window < 1, "window must be in (0, 1), got ", config.window, ".");
  CANDELA_CHECK(config.clusters >= 1, "clusters must be >= 1.");
  const int64_t n = x.size(0);
  auto explainer = Registry::builtin().create(config.method, config.method_options);
  {
    // The inference graph and the batch sizes, in the state explanations run in, before any
    // method's time is counted.
    detail::ModelGuard guard(model);
    Evaluator(model, config.eval).warm_up();
  }
  const at::Tensor targets = data.labels.defined() ? data.labels.to(at::kCPU, at::kLong).reshape({-1})
                                                   : top1(model, x, config.eval);
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < n; b += 16) {
    const int64_t e = std::min(n, b + 16);
    ExplainRequest req;
    req.inputs = x.slice(0, b, e);
    req.target = detail::class_target(targets.slice(0, b, e));
    req.baseline = config.baseline;
    req.eval = config.eval;
    parts.push_back(explainer->explain(model, req).values);
  }
  const FeatureMap fm = feature_map(at::cat(parts), x, spec);
  const int64_t h = fm.height, w = fm.width;
  at::Tensor maps = fm.values.abs();
  maps = maps / maps.sum(1, true).clamp_min(1e-30);  // each map sums to 1
  const int64_t win = std::max<int64_t>(1, static_cast<int64_t>(std::lround(config.window * std::min(h, w))));
  const at::Tensor shares = at::avg_pool2d(maps.view({n, 1, h, w}), {win, win}, {1, 1}).mul(win * win).squeeze(1);
  const at::Tensor mean_share = shares.mean(0);  // [h - win + 1, w - win + 1]
  const int64_t best = mean_share.reshape({-1}).argmax().item<int64_t>();
  const int64_t y0 = best / mean_share.size(1), x0 = best % mean_share.size(1);
  const at::Tensor share = shares.select(1, y0).select(1, x0);  // [n]
  const double area = static_cast<double>(win * win) / static_cast<double>(h * w);
  const double fraction = share.ge(config.factor * area).to(at::kDouble).mean().item<double>();
  nlohmann::json per_class = nlohmann::json::object();
  for (int64_t c : std::set<int64_t>(targets.data_ptr<int64_t>(), targets.data_ptr<int64_t>() + n)) {
    const at::Tensor sel = targets.eq(c);
    per_class[std::to_string(c)] = {{"samples", sel.sum().item<int64_t>()},
                                    {"mean_share", share.masked_select(sel).mean().item<double>()}};
  }
  // k-means over the normalised maps (OpenCV), seeded.
  const int64_t k = std::min<int64_t>(config.clusters, n);
  cv::Mat samples(static_cast<int>(n), static_cast<int>(h * w), CV_32F);
  const at::Tensor mf = maps.to(at::kFloat).contiguous();
  std::memcpy(samples.data, mf.data_ptr<float>(), sizeof(float) * n * h * w);
  cv::Mat labels, centers;
  cv::setRNGSeed(static_cast<int>(config.seed));
  cv::kmeans(samples, static_cast<int>(k), labels, cv::TermCriteria(cv::TermCriteria::EPS + cv::TermCriteria::COUNT, 100, 1e-6),
             5, cv::KMEANS_PP_CENTERS, centers);
  nlohmann::json clusters = nlohmann::json::array();
  for (int64_t c = 0; c < k; ++c) {
    std::vector<int64_t> members;
    for (int64_t i = 0; i < n; ++i)
      if (labels.at<int>(static_cast<int>(i)) == c) members.push_back(i);
    if (members.empty()) continue;
    const at::Tensor idx = at::tensor(members, at::TensorOptions().dtype(at::kLong));
    std::map<int64_t, int64_t> classes;
    for (int64_t i : members) ++classes[targets[i].item<int64_t>()];
    nlohmann::json cls = nlohmann::json::object();
    for (const auto& [cl, count] : classes) cls[std::to_string(cl)] = count;
    clusters.push_back({{"samples", members.size()},
                        {"mean_share", share.index_select(0, idx).mean().item<double>()},
                        {"classes", cls}});
  }
  nlohmann::json region = nullptr;
  if (!config.region.empty()) {
    const auto& r = config.region;
    CANDELA_CHECK(r.size() == 4 && r[0] >= 0 && r[1] >= 0 && r[2] > r[0] && r[3] > r[1] && r[2] <= h && r[3] <= w,
                  "the audit region must be y0,x0,y1,x1 inside the ", h, "x", w, " map with y0 < y1 and x0 < x1.");
    const at::Tensor in = maps.view({n, h, w}).slice(1, r[0], r[2]).slice(2, r[1], r[3]).sum({1, 2});  // [n]
    const double r_area = static_cast<double>((r[2] - r[0]) * (r[3] - r[1])) / static_cast<double>(h * w);
    const double r_fraction = in.ge(config.factor * r_area).to(at::kDouble).mean().item<double>();
    region = {{"window", {{"y0", r[0]}, {"x0", r[1]}, {"y1", r[2]}, {"x1", r[3]}}},
              {"area_share", r_area},
              {"mean_relevance_share", in.mean().item<double>()},
              {"fraction_over_factor", r_fraction},
              {"flagged", r_fraction >= config.min_fraction}};
  }
  const double mean = share.mean().item<double>();
  const bool suspected = fraction >= config.min_fraction;
  std::ostringstream evidence;
  evidence << std::setprecision(3) << "the " << win << "x" << win << " window at rows " << y0 << ".." << y0 + win - 1
           << ", columns " << x0 << ".." << x0 + win - 1 << " covers " << 100 * area << "% of the image but holds "
           << 100 * mean << "% of the " << config.method << " relevance on average ("
           << mean / area << "x its area); in " << 100 * fraction << "% of the samples it holds over " << config.factor
           << "x its area share.";
  nlohmann::json result = {{"method", config.method},
                         {"window", {{"y0", y0}, {"x0", x0}, {"y1", y0 + win}, {"x1", x0 + win}}},
                         {"area_share", area},
                         {"mean_relevance_share", mean},
                         {"fraction_over_factor", fraction},
                         {"factor", config.factor},
                         {"suspected", suspected},
                         {"evidence", evidence.str()},
                         {"per_class", per_class},
                         {"clusters", clusters},
                         {"sample_shares", detail::tensor_to_json(share)}};
  if (!region.is_null()) result["region"] = region;
  return result;
}

}  // namespace candela
