// TCAV (methods/concept/tcav.h).
#include "candela/methods/concept/tcav.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <boost/math/distributions/students_t.hpp>
#include <opencv2/core.hpp>
#include <opencv2/ml.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"
#include "candela/io/file.h"
#include "candela/io/npy.h"

namespace candela {
namespace {

namespace fs = std::filesystem;

// FNV-1a, 64 bits: a stable content key (the same bytes give the same key on every machine).
uint64_t fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}
uint64_t fnv1a(const std::string& s, uint64_t h = 1469598103934665603ull) { return fnv1a(s.data(), s.size(), h); }

uint64_t tensor_hash(const at::Tensor& t, uint64_t h) {
  at::Tensor c = t.detach().to(at::kCPU).contiguous();
  h = fnv1a(detail::shape_str(c.sizes()) + std::string(c.dtype().name()), h);
  return fnv1a(c.data_ptr(), c.nbytes(), h);
}

std::string hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

double mean_of(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size()); }
double var_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return s / static_cast<double>(v.size() - 1);
}

double two_sided_p(double t, double df) {
  if (std::isnan(t)) return 1.0;
  if (std::isinf(t)) return 0.0;
  boost::math::students_t dist(df);
  return std::min(1.0, 2.0 * boost::math::cdf(boost::math::complement(dist, std::abs(t))));
}

nlohmann::json summary(const std::vector<double>& v) {
  return {{"mean", mean_of(v)}, {"std", std::sqrt(var_of(v))}, {"values", v}};
}

}  // namespace

void TcavOptions::validate() const {
  CANDELA_CHECK(alpha > 0 && std::isfinite(alpha), "alpha must be > 0, got ", alpha, ".");
  CANDELA_CHECK(test_split > 0 && test_split < 1, "test_split must be in (0, 1), got ", test_split, ".");
  CANDELA_CHECK(significance > 0 && significance < 1, "significance must be in (0, 1), got ", significance, ".");
  CANDELA_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size, ".");
}

Cav train_cav(const at::Tensor& concept_acts, const at::Tensor& random, const TcavOptions& options) {
  options.validate();
  CANDELA_CHECK(concept_acts.dim() == 2 && random.dim() == 2 && concept_acts.size(1) == random.size(1),
                "CAV training needs activations [N, F] with the same F, got ", detail::shape_str(concept_acts.sizes()), " and ",
                detail::shape_str(random.sizes()), ".");
  const int64_t nc = concept_acts.size(0), nr = random.size(0), f = concept_acts.size(1);
  CANDELA_CHECK(nc >= 2 && nr >= 2, "a CAV needs at least 2 concept and 2 random samples, got ", nc, " and ", nr, ".");
  // A seeded split of each class: the first test_split of a shuffled order is held out.
  std::mt19937_64 rng(static_cast<uint64_t>(options.seed) * 0x9E3779B97F4A7C15ull + 17);
  auto split = [&](int64_t n, std::vector<int64_t>& train, std::vector<int64_t>& test) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[rng() % static_cast<uint64_t>(i + 1)]);
    const int64_t n_test = std::clamp<int64_t>(static_cast<int64_t>(std::round(options.test_split * n)), 1, n - 1);
    test.assign(order.begin(), order.begin() + n_test);
    train.assign(order.begin() + n_test, order.end());
  };
  std::vector<int64_t> c_train, c_test, r_train, r_test;
  split(nc, c_train, c_test);
  split(nr, r_train, r_test);
  const at::Tensor c = concept_acts.to(at::kFloat).contiguous(), r = random.to(at::kFloat).contiguous();
  auto rows = [&](const at::Tensor& t, const std::vector<int64_t>& idx) {
    return t.index_select(0, at::tensor(idx, at::kLong));
  };
  at::Tensor x_train = at::cat({rows(c, c_train), rows(r, r_train)}).contiguous();
  const int64_t n_train = x_train.size(0);
  cv::Mat samples(static_cast<int>(n_train), static_cast<int>(f), CV_32F, x_train.data_ptr<float>());
  cv::Mat labels(static_cast<int>(n_train), 1, CV_32S);
  for (int64_t i = 0; i < n_train; ++i) labels.at<int>(static_cast<int>(i)) = i < static_cast<int64_t>(c_train.size()) ? 1 : 0;
  auto svm = cv::ml::SVM::create();
  svm->setType(cv::ml::SVM::C_SVC);
  svm->setKernel(cv::ml::SVM::LINEAR);
  // SGDClassifier minimises mean(hinge) + alpha/2 |w|^2; the SVM C * sum(hinge) + 1/2 |w|^2.
  svm->setC(1.0 / (options.alpha * static_cast<double>(n_train)));
  svm->setTermCriteria(cv::TermCriteria(cv::TermCriteria::MAX_ITER + cv::TermCriteria::EPS, 100000, 1e-6));
  try {
    svm->train(samples, cv::ml::ROW_SAMPLE, labels);
  } catch (const cv::Exception& e) {
    throw InvalidArgument(detail::str_cat("the CAV classifier could not be trained: ", e.what()));
  }
  // A linear SVM keeps one compressed support vector: w.
  cv::Mat sv = svm->getSupportVectors();
  CANDELA_ASSERT(sv.rows == 1 && sv.cols == f, "linear SVM support vectors ", sv.rows, "x", sv.cols);
  cv::Mat alpha, svidx;
  const double rho = svm->getDecisionFunction(0, alpha, svidx);
  alpha.convertTo(alpha, CV_64F);
  at::Tensor w = at::from_blob(sv.ptr<float>(0), {f}, at::kFloat).to(at::kDouble).clone() * alpha.at<double>(0);
  // OpenCV's sign convention depends on the label order: orient w towards the concept's mean.
  at::Tensor cd = c.to(at::kDouble), rd = r.to(at::kDouble);
  double sign = (at::mv(cd, w).mean() - at::mv(rd, w).mean()).item<double>() >= 0 ? 1.0 : -1.0;
  w = w * sign;
  const double b = -rho * sign;
  auto score = [&](const at::Tensor& t, const std::vector<int64_t>& idx) { return at::mv(rows(t, idx), w); };
  // The decision threshold implied by OpenCV's rho for the oriented w: pick the side (rho or -rho)
  // that classifies the training rows best, so the accuracy does not depend on OpenCV's convention.
  auto accuracy_with = [&](double bias, const std::vector<int64_t>& ci, const std::vector<int64_t>& ri) {
    const double good = (score(cd, ci) + bias > 0).sum().item<double>() + (score(rd, ri) + bias <= 0).sum().item<double>();
    return good / static_cast<double>(ci.size() + ri.size());
  };
  const double bias = accuracy_with(b, c_train, r_train) >= accuracy_with(-b, c_train, r_train) ? b : -b;
  Cav cav;
  const double norm = w.norm().item<double>();
  CANDELA_CHECK(norm > 0, "the CAV classifier found no direction (identical concept and random activations?).");
  cav.direction = w / norm;
  cav.accuracy = accuracy_with(bias, c_test, r_test);
  return cav;
}

TcavScores tcav_scores(const at::Tensor& gradients, const at::Tensor& cav) {
  CANDELA_CHECK(gradients.dim() == 2 && cav.dim() == 1 && gradients.size(1) == cav.size(0),
                "TCAV scores need gradients [N, F] and a CAV [F], got ", detail::shape_str(gradients.sizes()), " and ",
                detail::shape_str(cav.sizes()), ".");
  at::Tensor s = at::mv(gradients.to(at::kDouble), cav.to(at::kDouble));
  TcavScores out;
  out.sign_count = (s > 0).to(at::kDouble).mean().item<double>();
  const double total = s.abs().sum().item<double>();
  out.magnitude = total > 0 ? (s.clamp_min(0)).sum().item<double>() / total : 0.0;
  out.mean_derivative = s.mean().item<double>();
  return out;
}

TTest student_t_test(const std::vector<double>& a, const std::vector<double>& b) {
  CANDELA_CHECK(a.size() >= 2 && b.size() >= 2, "a t-test needs at least 2 values per group.");
  const double na = static_cast<double>(a.size()), nb = static_cast<double>(b.size());
  TTest r;
  r.df = na + nb - 2;
  const double pooled = ((na - 1) * var_of(a) + (nb - 1) * var_of(b)) / r.df;
  const double diff = mean_of(a) - mean_of(b);
  const double se = std::sqrt(pooled * (1 / na + 1 / nb));
  r.t = se > 0 ? diff / se : (diff == 0 ? std::nan("") : std::copysign(INFINITY, diff));
  r.p = two_sided_p(r.t, r.df);
  return r;
}

TTest prediction_t_test(double mean_one, const std::vector<double>& sample) {
  CANDELA_CHECK(sample.size() >= 2, "the test needs at least 2 random scores.");
  const double k = static_cast<double>(sample.size());
  TTest r;
  r.df = k - 1;
  const double se = std::sqrt(var_of(sample) * (1 + 1 / k));
  const double diff = mean_one - mean_of(sample);
  r.t = se > 0 ? diff / se : (diff == 0 ? std::nan("") : std::copysign(INFINITY, diff));
  r.p = two_sided_p(r.t, r.df);
  return r;
}

at::Tensor layer_activations(const Model& model, const std::string& layer, const at::Tensor& inputs, int64_t batch_size) {
  auto taps = LayerTaps::of(model, {layer});
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < inputs.size(0); i += batch_size) {
    at::Tensor a = taps->forward(inputs.narrow(0, i, std::min(batch_size, inputs.size(0) - i))).activations[0];
    parts.push_back(a.reshape({a.size(0), -1}).to(at::kDouble));
  }
  return at::cat(parts);
}

at::Tensor layer_gradients(const Model& model, const std::string& layer, const at::Tensor& inputs, int64_t target,
                           int64_t batch_size) {
  auto taps = LayerTaps::of(model, {layer});
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < inputs.size(0); i += batch_size) {
    // An input that requires grad keeps the layer in the autograd graph even when nothing before
    // it has parameters.
    at::Tensor x = inputs.narrow(0, i, std::min(batch_size, inputs.size(0) - i)).detach().requires_grad_(true);
    auto run = taps->forward(x);
    CANDELA_CHECK(run.output.dim() == 2 && target >= 0 && target < run.output.size(1), "target ", target,
                  " is not an output of the model (its output is ", detail::shape_str(run.output.sizes()), ").");
    at::Tensor g = torch::autograd::grad({run.output.select(1, target).sum()}, {run.activations[0]})[0];
    parts.push_back(g.reshape({g.size(0), -1}).to(at::kDouble));
  }
  return at::cat(parts);
}

ActivationCache::ActivationCache(std::string dir) : dir_(std::move(dir)) {}

std::string ActivationCache::default_dir() {
  if (const char* d = std::getenv("CANDELA_CACHE_DIR"); d && *d) return (fs::path(d) / "tcav").string();
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return (fs::path(d) / "candela" / "tcav").string();
  if (const char* d = std::getenv("HOME"); d && *d) return (fs::path(d) / ".cache" / "candela" / "tcav").string();
  return "";
}

at::Tensor ActivationCache::activations(const Model& model, const std::string& layer, const at::Tensor& inputs,
                                        int64_t batch_size) {
  // Only models loaded from a file have content to key on.
  if (dir_.empty() || model.source().empty()) {
    ++misses_;
    return layer_activations(model, layer, inputs, batch_size);
  }
  if (model_path_ != model.source()) {
    model_key_ = hex(fnv1a(read_file(model.source(), size_t{8} << 30)));
    model_path_ = model.source();
  }
  const std::string key = hex(tensor_hash(inputs, fnv1a(model_key_ + "|" + layer + "|" + model.device())));
  const fs::path file = fs::path(dir_) / ("act-" + key + ".npy");
  std::error_code ec;
  if (fs::exists(file, ec)) {
    try {
      at::Tensor t = read_npy(file.string());
      if (t.dim() == 2 && t.size(0) == inputs.size(0)) {
        ++hits_;
        return t;
      }
    } catch (const Error&) {
      // A damaged entry is computed again and overwritten.
    }
  }
  ++misses_;
  at::Tensor a = layer_activations(model, layer, inputs, batch_size);
  fs::create_directories(dir_, ec);
  try {
    write_npy(file.string(), a);
  } catch (const Error&) {
    // A cache that cannot be written only costs time.
  }
  return a;
}

Cav ActivationCache::cav(const at::Tensor& concept_acts, const at::Tensor& random, const TcavOptions& options) {
  if (dir_.empty()) return train_cav(concept_acts, random, options);
  uint64_t h = tensor_hash(random, tensor_hash(concept_acts, fnv1a("cav-v1")));
  h = fnv1a(detail::str_cat(options.alpha, "|", options.test_split, "|", options.seed), h);
  const fs::path file = fs::path(dir_) / ("cav-" + hex(h) + ".npy");
  std::error_code ec;
  if (fs::exists(file, ec)) {
    try {
      at::Tensor t = read_npy(file.string());
      if (t.dim() == 1 && t.size(0) == concept_acts.size(1) + 1) {
        Cav c;
        c.direction = t.narrow(0, 0, concept_acts.size(1)).clone();
        c.accuracy = t[concept_acts.size(1)].item<double>();
        return c;
      }
    } catch (const Error&) {
    }
  }
  Cav c = train_cav(concept_acts, random, options);
  fs::create_directories(dir_, ec);
  try {
    write_npy(file.string(), at::cat({c.direction, at::full({1}, c.accuracy, at::kDouble)}));
  } catch (const Error&) {
  }
  return c;
}

nlohmann::json tcav(const Model& model, const std::string& layer, const at::Tensor& inputs, int64_t target,
                    const std::vector<ConceptSet>& concepts, const std::vector<ConceptSet>& randoms,
                    const TcavOptions& options, ActivationCache& cache, const ProgressCallback& progress,
                    const CancelToken& cancel) {
  options.validate();
  CANDELA_CHECK(!concepts.empty(), "TCAV needs at least one concept (--concept NAME=FOLDER).");
  CANDELA_CHECK(randoms.size() >= 3, "TCAV needs at least 3 random sets (--random FOLDER, repeated), got ",
                randoms.size(), "; the paper uses tens to hundreds.");
  CANDELA_CHECK(inputs.defined() && inputs.size(0) >= 1, "TCAV needs inputs of the target class (--input).");
  const auto start = std::chrono::steady_clock::now();
  const int64_t k = static_cast<int64_t>(randoms.size());
  const int64_t total = static_cast<int64_t>(concepts.size() + randoms.size()) + 1 +
                        k * static_cast<int64_t>(concepts.size() + 1);
  int64_t done = 0;
  auto tick = [&](const char* stage) {
    if (cancel.cancelled()) throw Cancelled("TCAV cancelled.");
    if (progress) progress({stage, ++done, total});
  };
  const int64_t hits0 = cache.hits();
  at::Tensor grads = layer_gradients(model, layer, inputs, target, options.batch_size);
  tick("tcav: gradients");
  std::vector<at::Tensor> random_acts;
  for (const auto& r : randoms) {
    random_acts.push_back(cache.activations(model, layer, r.inputs, options.batch_size));
    tick("tcav: activations");
  }
  struct Scores {
    std::vector<double> sign_count, magnitude, mean_derivative, accuracy;
    void add(const TcavScores& s, double acc) {
      sign_count.push_back(s.sign_count);
      magnitude.push_back(s.magnitude);
      mean_derivative.push_back(s.mean_derivative);
      accuracy.push_back(acc);
    }
    nlohmann::json to_json() const {
      return {{"sign_count", summary(sign_count)},
              {"magnitude", summary(magnitude)},
              {"mean_derivative", summary(mean_derivative)},
              {"cav_accuracy", summary(accuracy)}};
    }
  };
  // The random baseline: R_i in the concept's place against R_{i+1 mod k}.
  Scores baseline;
  for (int64_t i = 0; i < k; ++i) {
    Cav c = cache.cav(random_acts[static_cast<size_t>(i)], random_acts[static_cast<size_t>((i + 1) % k)], options);
    baseline.add(tcav_scores(grads, c.direction), c.accuracy);
    tick("tcav: random CAVs");
  }
  nlohmann::json concept_reports = nlohmann::json::array();
  const double m = static_cast<double>(concepts.size());
  for (const auto& concept_set : concepts) {
    at::Tensor acts = cache.activations(model, layer, concept_set.inputs, options.batch_size);
    tick("tcav: activations");
    Scores s;
    for (int64_t i = 0; i < k; ++i) {
      Cav c = cache.cav(acts, random_acts[static_cast<size_t>(i)], options);
      s.add(tcav_scores(grads, c.direction), c.accuracy);
      tick("tcav: concept CAVs");
    }
    nlohmann::json r = s.to_json();
    r["name"] = concept_set.name;
    r["samples"] = concept_set.inputs.size(0);
    const TTest pred = prediction_t_test(mean_of(s.sign_count), baseline.sign_count);
    const TTest student = student_t_test(s.sign_count, baseline.sign_count);
    const double p_bonf = std::min(1.0, pred.p * m);
    r["t"] = std::isfinite(pred.t) ? nlohmann::json(pred.t) : nlohmann::json(nullptr);
    r["df"] = pred.df;
    r["p_value"] = pred.p;
    r["p_value_bonferroni"] = p_bonf;
    r["p_value_student"] = student.p;
    r["significant"] = p_bonf < options.significance;
    const double diff = mean_of(s.sign_count) - mean_of(baseline.sign_count);
    r["verdict"] = p_bonf < options.significance
                       ? std::string(diff > 0 ? "the concept raises" : "the concept lowers") +
                             " the target's output (significant)"
                       : std::string("not significant: indistinguishable from random concepts");
    concept_reports.push_back(r);
  }
  nlohmann::json report = {
      {"layer", layer},
      {"target", target},
      {"inputs", inputs.size(0)},
      {"random_sets", k},
      {"score_tested", "sign_count"},
      {"test",
       "two-sided t-test of the concept's mean sign_count against the random baseline as one draw: t = (mean s - mean "
       "b) / (sd b * sqrt(1 + 1/k)), k - 1 degrees of freedom; Bonferroni over the concepts"},
      {"classifier", "linear SVM (OpenCV C-SVC) with C = 1/(alpha * n_train): the objective of Captum's SGDClassifier"},
      {"options", options_to_json(options)},
      {"concepts", concept_reports},
      {"random", baseline.to_json()},
      {"cache", {{"activation_hits", cache.hits() - hits0}}},
      {"wall_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  return report;
}

}  // namespace candela
