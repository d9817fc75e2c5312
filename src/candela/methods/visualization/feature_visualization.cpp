// Feature visualisation (methods/visualization/feature_visualization.h), after Lucent's optvis.
#include "candela/methods/visualization/feature_visualization.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <map>
#include <sstream>

#include "candela/core/error.h"
#include "candela/core/model.h"
#include "candela/detail/adam.h"
#include "candela/detail/tensor_util.h"
#include "candela/graph/taps.h"

namespace candela {
namespace {

using detail::str_cat;

struct KindInfo {
  const char* name;
  const char* arguments;
  const char* description;
  bool needs_layer, needs_channel;
};

// The objective kinds: the one table the parser, the catalogue and the evaluation read.
constexpr KindInfo kKinds[] = {
    {"neuron", "LAYER, C[, X, Y]", "Activation of channel C at position (X, Y) (default: the centre).", true, true},
    {"channel", "LAYER, C", "Mean activation of channel C (unit C of a [N, C] layer).", true, true},
    {"deepdream", "LAYER", "Mean squared activation of the whole layer (DeepDream).", true, false},
    {"class", "C", "The model's output C (a class logit).", false, true},
    {"diversity", "LAYER",
     "Minus the mean pairwise cosine similarity of the images' Gram matrices at LAYER (needs batch > 1).", true,
     false},
};

const KindInfo* find_kind(const std::string& name) {
  for (const auto& k : kKinds)
    if (name == k.name) return &k;
  return nullptr;
}

std::string kind_names() {
  std::string s;
  for (const auto& k : kKinds) s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

bool parse_int(const std::string& text, int64_t& out) {
  const std::string t = trim(text);
  if (t.empty()) return false;
  size_t used = 0;
  try {
    out = std::stoll(t, &used);
  } catch (const std::exception&) {
    return false;
  }
  return used == t.size();
}

// One term: [WEIGHT*]KIND(ARGS)[[B]].
ObjectiveTerm parse_term(std::string text, double sign, const std::string& whole) {
  ObjectiveTerm term;
  term.weight = sign;
  text = trim(text);
  const auto star = text.find('*');
  const auto paren = text.find('(');
  if (star != std::string::npos && (paren == std::string::npos || star < paren)) {
    const std::string w = trim(text.substr(0, star));
    size_t used = 0;
    double value = 0;
    try {
      value = std::stod(w, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    CANDELA_CHECK(used == w.size() && used > 0 && std::isfinite(value), "objective '", whole, "': '", w,
                  "' is not a number (write WEIGHT*KIND(ARGS), e.g. 0.5*channel(layer4,3)).");
    term.weight *= value;
    text = trim(text.substr(star + 1));
  }
  const auto open = text.find('('), close = text.rfind(')');
  CANDELA_CHECK(open != std::string::npos && close != std::string::npos && close > open, "objective '", whole,
                "': cannot read '", text, "'; write KIND(ARGS), e.g. channel(layer4,12). Kinds: ", kind_names(), ".");
  term.kind = trim(text.substr(0, open));
  const KindInfo* kind = find_kind(term.kind);
  CANDELA_CHECK(kind, "objective '", whole, "': unknown kind '", term.kind, "'.",
                did_you_mean(term.kind, [] {
                  std::vector<std::string> v;
                  for (const auto& k : kKinds) v.emplace_back(k.name);
                  return v;
                }()),
                " Kinds: ", kind_names(), ".");
  std::vector<std::string> args;
  {
    std::string cur;
    for (char ch : text.substr(open + 1, close - open - 1)) {
      if (ch == ',') {
        args.push_back(trim(cur));
        cur.clear();
      } else {
        cur += ch;
      }
    }
    args.push_back(trim(cur));
  }
  const std::string tail = trim(text.substr(close + 1));
  if (!tail.empty()) {
    CANDELA_CHECK(tail.front() == '[' && tail.back() == ']' && parse_int(tail.substr(1, tail.size() - 2), term.batch) &&
                      term.batch >= 0,
                  "objective '", whole, "': after ", term.kind, "(...) only [B] may follow (an image index >= 0), got '",
                  tail, "'.");
  }
  const std::string usage = str_cat(term.kind, "(", kind->arguments, ")");
  size_t next = 0;
  if (kind->needs_layer) {
    CANDELA_CHECK(!args.empty() && !args[0].empty(), "objective '", whole, "': ", term.kind, " needs a layer: ", usage,
                  ".");
    term.layer = args[next++];
  }
  if (kind->needs_channel) {
    CANDELA_CHECK(args.size() > next && parse_int(args[next], term.channel) && term.channel >= 0, "objective '", whole,
                  "': ", term.kind, " needs a channel index >= 0: ", usage, ".");
    ++next;
  }
  if (term.kind == "neuron" && args.size() == next + 2) {
    CANDELA_CHECK(parse_int(args[next], term.x) && parse_int(args[next + 1], term.y) && term.x >= 0 && term.y >= 0,
                  "objective '", whole, "': neuron's X and Y must be integers >= 0: ", usage, ".");
    next += 2;
  }
  CANDELA_CHECK(args.size() == next || (args.size() == 1 && args[0].empty() && next == 0), "objective '", whole,
                "': ", term.kind, " takes ", usage, ", got ", args.size(), " arguments.");
  return term;
}

// The layer's rows [N, ...] of the images a term applies to.
at::Tensor rows_of(const at::Tensor& t, int64_t batch) {
  if (batch < 0) return t;
  CANDELA_CHECK(batch < t.size(0), "an objective term names image [", batch, "] but the batch has ", t.size(0),
                " images; raise the batch option.");
  return t.narrow(0, batch, 1);
}

}  // namespace

Objective Objective::parse(const std::string& text) {
  Objective obj;
  CANDELA_CHECK(!trim(text).empty(), "the objective is empty; write e.g. channel(layer4,12).");
  // Split at + and - outside parentheses and brackets, and not inside a number's exponent (1e-3).
  int depth = 0;
  std::string cur;
  double sign = 1.0;
  auto flush = [&](char next_sign) {
    CANDELA_CHECK(!trim(cur).empty(), "objective '", text, "': a '", next_sign,
                  "' has no term before it; write e.g. channel(a,1) - channel(a,2).");
    obj.terms.push_back(parse_term(cur, sign, text));
    cur.clear();
  };
  const std::string t = trim(text);
  for (size_t i = 0; i < t.size(); ++i) {
    const char ch = t[i];
    if (ch == '(' || ch == '[') ++depth;
    if (ch == ')' || ch == ']') --depth;
    const bool exponent = i > 0 && (t[i - 1] == 'e' || t[i - 1] == 'E') && i > 1 && std::isdigit(static_cast<unsigned char>(t[i - 2]));
    if (depth == 0 && (ch == '+' || ch == '-') && !exponent) {
      if (trim(cur).empty() && obj.terms.empty()) {
        sign = ch == '-' ? -1.0 : 1.0;  // a leading sign
        continue;
      }
      flush(ch);
      sign = ch == '-' ? -1.0 : 1.0;
      continue;
    }
    cur += ch;
  }
  CANDELA_CHECK(depth == 0, "objective '", text, "': unbalanced parentheses.");
  flush('.');
  return obj;
}

std::string Objective::to_string() const {
  std::string s;
  for (const auto& t : terms) {
    std::string w;
    const double a = std::abs(t.weight);
    if (a != 1.0) {
      std::ostringstream o;
      o << a << "*";
      w = o.str();
    }
    s += s.empty() ? (t.weight < 0 ? "-" : "") : (t.weight < 0 ? " - " : " + ");
    s += w + t.kind + "(";
    if (!t.layer.empty()) s += t.layer;
    if (t.channel >= 0) s += (t.layer.empty() ? "" : ",") + std::to_string(t.channel);
    if (t.x >= 0) s += "," + std::to_string(t.x) + "," + std::to_string(t.y);
    s += ")";
    if (t.batch >= 0) s += "[" + std::to_string(t.batch) + "]";
  }
  return s;
}

std::vector<std::string> Objective::layers() const {
  std::vector<std::string> out;
  for (const auto& t : terms)
    if (!t.layer.empty() && std::find(out.begin(), out.end(), t.layer) == out.end()) out.push_back(t.layer);
  return out;
}

nlohmann::json objective_catalog() {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& k : kKinds)
    out.push_back({{"name", k.name}, {"arguments", k.arguments}, {"description", k.description}});
  return out;
}

void FeatureVisualizationOptions::validate() const {
  CANDELA_CHECK(param == "fourier" || param == "pixel" || param == "maco", "param must be fourier, pixel or maco, got '",
                param, "'.");
  CANDELA_CHECK(transforms == "standard" || transforms == "none", "transforms must be standard or none, got '",
                transforms, "'.");
  CANDELA_CHECK(upsample == "auto" || upsample == "lucent" || upsample == "model" || upsample == "none",
                "upsample must be auto, lucent, model or none, got '", upsample, "'.");
  CANDELA_CHECK(sd >= 0 && std::isfinite(sd), "sd must be > 0 (0: the parametrisation's default), got ", sd, ".");
  CANDELA_CHECK(std::isfinite(decay_power) && decay_power >= 0, "decay_power must be >= 0, got ", decay_power, ".");
  CANDELA_CHECK(steps >= 0, "steps must be >= 1 (0: the parametrisation's default), got ", steps, ".");
  CANDELA_CHECK(lr >= 0 && std::isfinite(lr), "lr must be > 0 (0: the parametrisation's default), got ", lr, ".");
  CANDELA_CHECK(size == 0 || (size >= 2 && size <= 4096),
                "size must be in [2, 4096] pixels (0: the parametrisation's default), got ", size, ".");
  CANDELA_CHECK(batch >= 1 && batch <= 4096, "batch must be in [1, 4096], got ", batch, ".");
  CANDELA_CHECK(param != "maco" || batch == 1,
                "maco optimises one image at a time (Xplique's maco), got batch ", batch,
                "; set batch 1 (an atlas runs its channels one by one).");
  CANDELA_CHECK(maco_crops >= 0 && maco_crops <= 4096, "maco_crops must be in [0, 4096] (0: the whole image), got ",
                maco_crops, ".");
  CANDELA_CHECK(maco_noise >= 0 && std::isfinite(maco_noise), "maco_noise must be >= 0, got ", maco_noise, ".");
  CANDELA_CHECK(maco_box >= 0 && maco_box <= 1, "maco_box must be in [0, 1] (0: from 0.5 to 0.05 over the steps), got ",
                maco_box, ".");
}

FeatureVisualizationOptions FeatureVisualizationOptions::resolved() const {
  FeatureVisualizationOptions r = *this;
  const bool maco = param == "maco";
  if (r.sd == 0) r.sd = maco ? 1.0 : 0.01;       // init_maco_buffer's std; Lucent's sd
  if (r.steps == 0) r.steps = maco ? 256 : 512;  // Xplique's nb_steps; Lucent's thresholds
  if (r.lr == 0) r.lr = maco ? 1.0 : 0.05;       // Xplique's Nadam(1.0); Lucent's Adam(lr=5e-2)
  if (r.size == 0) r.size = maco ? 512 : 128;    // Xplique's custom_shape; Lucent's param.image(128)
  return r;
}

std::vector<at::Tensor> objective_terms(const Objective& objective, const std::vector<at::Tensor>& activations,
                                        const at::Tensor& output) {
  const std::vector<std::string> layers = objective.layers();
  CANDELA_ASSERT(activations.size() == layers.size(), "objective_terms: ", activations.size(), " activations for ",
                 layers.size(), " layers");
  std::vector<at::Tensor> values;
  for (const auto& term : objective.terms) {
    at::Tensor act = output;
    if (!term.layer.empty())
      act = activations[std::find(layers.begin(), layers.end(), term.layer) - layers.begin()];
    const std::string where = term.layer.empty() ? std::string("the output") : "layer " + term.layer;
    if (term.kind == "diversity") {
      CANDELA_CHECK(act.dim() >= 3, "diversity(", term.layer, ") needs a [N, C, ...] layer; ", where, " is ",
                    detail::shape_str(act.sizes()), ".");
      CANDELA_CHECK(act.size(0) > 1, "diversity compares images of a batch: set the batch option to 2 or more.");
      const int64_t n = act.size(0);
      at::Tensor f = act.reshape({n, act.size(1), -1});
      at::Tensor grams = at::bmm(f, f.transpose(1, 2)).reshape({n, -1});
      grams = grams / grams.norm(2, {1}, true).clamp_min(1e-12);  // F.normalize(p=2, dim=(1, 2))
      at::Tensor sim = at::mm(grams, grams.t());
      // Lucent: sum over i != j of <g_i, g_j>, divided by the batch size.
      values.push_back(-(sim.sum() - sim.diagonal().sum()) / static_cast<double>(n));
      continue;
    }
    at::Tensor rows = rows_of(act, term.batch);
    if (term.kind == "deepdream") {
      values.push_back(rows.pow(2).mean());
      continue;
    }
    CANDELA_CHECK(rows.dim() >= 2, term.kind, " needs a [N, C, ...] tensor; ", where, " is ",
                  detail::shape_str(act.sizes()), ".");
    CANDELA_CHECK(term.channel < rows.size(1), term.kind, "(", term.layer.empty() ? "" : term.layer + ",", term.channel,
                  "): ", where, " has ", rows.size(1), " channels (0..", rows.size(1) - 1, ").");
    at::Tensor ch = rows.select(1, term.channel);
    if (term.kind == "neuron" && ch.dim() >= 3) {
      const int64_t x = term.x >= 0 ? term.x : ch.size(1) / 2, y = term.y >= 0 ? term.y : ch.size(2) / 2;
      CANDELA_CHECK(x < ch.size(1) && y < ch.size(2), "neuron position (", x, ", ", y, ") is outside ", where, "'s ",
                    ch.size(1), "x", ch.size(2), " map.");
      ch = ch.select(1, x).select(1, y);
    }
    values.push_back(ch.mean());
  }
  return values;
}

std::vector<std::vector<DatasetExample>> dataset_examples(const Model& model, const std::string& layer,
                                                          const std::vector<int64_t>& channels,
                                                          const at::Tensor& inputs, int64_t k, int64_t batch_size) {
  CANDELA_CHECK(k >= 1, "top-k needs k >= 1, got ", k, ".");
  CANDELA_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size, ".");
  CANDELA_CHECK(inputs.defined() && inputs.size(0) >= 1, "dataset examples need at least one sample.");
  auto taps = LayerTaps::of(model, {layer});
  // Every channel's mean activation on every sample, [N, C], in one pass.
  std::vector<at::Tensor> means;
  {
    at::NoGradGuard no_grad;
    for (int64_t i = 0; i < inputs.size(0); i += batch_size) {
      at::Tensor a = taps->forward(inputs.narrow(0, i, std::min(batch_size, inputs.size(0) - i))).activations[0];
      CANDELA_CHECK(a.dim() >= 2, "layer ", layer, " has no channels: it is ", detail::shape_str(a.sizes()), ".");
      for (int64_t c : channels)
        CANDELA_CHECK(c >= 0 && c < a.size(1), "channel ", c, " is out of range: layer ", layer, " is ",
                      detail::shape_str(a.sizes()), ".");
      means.push_back(a.reshape({a.size(0), a.size(1), -1}).mean(2).to(at::kDouble));
    }
  }
  const at::Tensor all = at::cat(means);
  k = std::min(k, all.size(0));
  const bool nhwc = model.input_spec().layout == "NHWC";
  std::vector<std::vector<DatasetExample>> out;
  for (int64_t channel : channels) {
    at::Tensor col = all.select(1, channel);
    at::Tensor order = std::get<1>(col.topk(k));
    std::vector<DatasetExample> list;
    for (int64_t j = 0; j < k; ++j) {
      DatasetExample e;
      e.index = order[j].item<int64_t>();
      e.activation = col[e.index].item<double>();
      at::Tensor x = inputs.narrow(0, e.index, 1).clone().requires_grad_(true);
      at::Tensor map = taps->forward(x).activations[0][0][channel];
      if (map.dim() == 2) {
        const int64_t flat = map.flatten().argmax().item<int64_t>();
        e.y = flat / map.size(1);
        e.x = flat % map.size(1);
      }
      at::Tensor unit = map.dim() == 2 ? map[e.y][e.x] : map.flatten()[0];
      e.peak = unit.item<double>();
      at::Tensor g = torch::autograd::grad({unit}, {x})[0][0].abs();
      if (g.dim() == 3) {
        g = nhwc ? g.sum(2) : g.sum(0);  // [H, W]
        at::Tensor rows = at::nonzero(g.sum(1) > 0), cols = at::nonzero(g.sum(0) > 0);
        if (rows.numel() > 0 && cols.numel() > 0) {
          e.top = rows.min().item<int64_t>();
          e.bottom = rows.max().item<int64_t>() + 1;
          e.left = cols.min().item<int64_t>();
          e.right = cols.max().item<int64_t>() + 1;
        } else {  // no gradient (a dead unit): the whole image
          e.bottom = g.size(0);
          e.right = g.size(1);
        }
      }
      list.push_back(e);
    }
    out.push_back(std::move(list));
  }
  return out;
}

std::vector<DatasetExample> dataset_examples(const Model& model, const std::string& layer, int64_t channel,
                                             const at::Tensor& inputs, int64_t k, int64_t batch_size) {
  return dataset_examples(model, layer, std::vector<int64_t>{channel}, inputs, k, batch_size)[0];
}

namespace fv {

at::Tensor color_correlation_normalized() {
  const at::Tensor m = at::tensor({0.26f, 0.09f, 0.02f, 0.27f, 0.00f, -0.05f, 0.27f, -0.09f, 0.03f}).reshape({3, 3});
  // max over columns of the column norms (numpy: np.linalg.norm(axis=0)).
  return m / m.norm(2, {0}).max();
}

at::Tensor decorrelate_colors(const at::Tensor& image) {
  CANDELA_CHECK(image.dim() == 4 && image.size(1) == 3, "colour decorrelation needs [N, 3, H, W], got ",
                detail::shape_str(image.sizes()), ".");
  const at::Tensor m = color_correlation_normalized().to(image.options());
  return at::matmul(image.permute({0, 2, 3, 1}), m.t()).permute({0, 3, 1, 2});
}

at::Tensor rfft2d_freqs(int64_t h, int64_t w) {
  const auto d = at::TensorOptions().dtype(at::kDouble);
  at::Tensor fy = at::fft_fftfreq(h, 1.0, d).unsqueeze(1);
  at::Tensor fx = at::fft_fftfreq(w, 1.0, d);
  // numpy keeps one more frequency for odd widths; rfftn then drops it (Lucid's comment).
  fx = fx.narrow(0, 0, std::min<int64_t>(w, w % 2 == 1 ? w / 2 + 2 : w / 2 + 1));
  return at::sqrt(fx * fx + fy * fy);
}

at::Tensor fourier_scale(int64_t h, int64_t w, double decay_power) {
  at::Tensor f = rfft2d_freqs(h, w).clamp_min(1.0 / static_cast<double>(std::max(h, w)));
  return (1.0 / f.pow(decay_power)).to(at::kFloat);
}

at::Tensor fourier_image(const at::Tensor& spectrum, const at::Tensor& scale, int64_t h, int64_t w) {
  CANDELA_CHECK(spectrum.dim() == 5 && spectrum.size(4) == 2, "a Fourier spectrum is [N, C, h, w', 2], got ",
                detail::shape_str(spectrum.sizes()), ".");
  at::Tensor scaled = (spectrum * scale.unsqueeze(-1)).contiguous();
  at::Tensor image = at::fft_irfftn(at::view_as_complex(scaled), at::IntArrayRef{h, w}, at::IntArrayRef{-2, -1}, "ortho");
  return image / 4.0;  // Lucid's "magic" constant
}

TransformDraw draw_transforms(std::mt19937_64& rng) {
  // Raw 64-bit outputs modulo n: the same draws from the same seed on every standard library.
  auto pick = [&](uint64_t n) { return static_cast<int64_t>(rng() % n); };
  TransformDraw d;
  d.jitter1_dx = pick(8);
  d.jitter1_dy = pick(8);
  d.scale = 1.0 + (static_cast<double>(pick(11)) - 5.0) / 50.0;
  const int64_t a = pick(26);  // list(range(-10, 11)) + 5 * [0]
  d.angle = a < 21 ? static_cast<double>(a - 10) : 0.0;
  d.jitter2_dx = pick(4);
  d.jitter2_dy = pick(4);
  return d;
}

at::Tensor pad(const at::Tensor& image, int64_t w, double value) {
  return at::constant_pad_nd(image, {w, w, w, w}, value);
}

at::Tensor translate(const at::Tensor& image, int64_t dx, int64_t dy) {
  const int64_t h = image.size(2), w = image.size(3);
  if (std::abs(dx) >= w || std::abs(dy) >= h) return at::zeros_like(image);
  // Shift by padding on one side and cropping the other.
  at::Tensor p = at::constant_pad_nd(image, {std::max<int64_t>(dx, 0), std::max<int64_t>(-dx, 0),
                                             std::max<int64_t>(dy, 0), std::max<int64_t>(-dy, 0)},
                                     0.0);
  return p.narrow(2, std::max<int64_t>(-dy, 0), h).narrow(3, std::max<int64_t>(-dx, 0), w);
}

at::Tensor scale(const at::Tensor& image, double s) {
  const int64_t h = image.size(2), w = image.size(3);
  // np.ceil on float64 products, as Lucent's _roundup.
  const int64_t sh = static_cast<int64_t>(std::ceil(s * static_cast<double>(h)));
  const int64_t sw = static_cast<int64_t>(std::ceil(s * static_cast<double>(w)));
  // The same size with align_corners samples every pixel at its centre: the identity.
  at::Tensor up = sh == h && sw == w ? image : at::upsample_bilinear2d(image, {sh, sw}, /*align_corners=*/true);
  const int64_t pad_x = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((static_cast<double>(w - sw)) / 2.0)));
  const int64_t pad_y = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((static_cast<double>(h - sh)) / 2.0)));
  // F.pad(x, [pad_y, pad_x] * 2): width gets (pad_y, pad_x), height (pad_y, pad_x).
  return at::constant_pad_nd(up, {pad_y, pad_x, pad_y, pad_x}, 0.0);
}

at::Tensor rotate(const at::Tensor& image, double degrees) {
  // 0 degrees samples every pixel at its own centre: the identity (5 of Lucent's 26 angles are 0).
  if (degrees == 0.0) return image;
  const int64_t n = image.size(0), h = image.size(2), w = image.size(3);
  const double th = degrees * M_PI / 180.0, a = std::cos(th), b = std::sin(th);
  const double cx = (static_cast<double>(w) - 1) / 2, cy = (static_cast<double>(h) - 1) / 2;
  const auto d = image.options().dtype(at::kDouble);
  // Destination pixel p reads the source at M^-1 p, M = get_rotation_matrix2d (OpenCV's form).
  at::Tensor ys = at::arange(h, d).unsqueeze(1).expand({h, w}) - cy;
  at::Tensor xs = at::arange(w, d).unsqueeze(0).expand({h, w}) - cx;
  at::Tensor sx = a * xs - b * ys + cx, sy = b * xs + a * ys + cy;
  // grid_sample's normalised coordinates with align_corners: -1 and 1 are the corner pixels' centres.
  at::Tensor gx = w > 1 ? sx * (2.0 / (w - 1)) - 1.0 : at::zeros_like(sx);
  at::Tensor gy = h > 1 ? sy * (2.0 / (h - 1)) - 1.0 : at::zeros_like(sy);
  at::Tensor grid = at::stack({gx, gy}, -1).to(image.scalar_type()).unsqueeze(0).expand({n, h, w, 2});
  return at::grid_sampler(image, grid, /*bilinear*/ 0, /*zeros*/ 0, /*align_corners=*/true);
}

at::Tensor standard_transforms(const at::Tensor& image, const TransformDraw& draw) {
  at::Tensor x = pad(image, 12, 0.5);
  x = translate(x, draw.jitter1_dx, draw.jitter1_dy);
  x = scale(x, draw.scale);
  x = rotate(x, draw.angle);
  return translate(x, draw.jitter2_dx, draw.jitter2_dy);
}

at::Tensor phase_to_image(const at::Tensor& magnitude, const at::Tensor& phase, int64_t h, int64_t w) {
  CANDELA_CHECK(phase.dim() >= 2 && phase.size(-2) == h && phase.size(-1) == w / 2 + 1,
                "a phase for a ", h, "x", w, " image is [..., ", h, ", ", w / 2 + 1, "], got ",
                detail::shape_str(phase.sizes()), ".");
  at::Tensor z = at::complex(magnitude * at::cos(phase), magnitude * at::sin(phase));
  return at::fft_irfftn(z, at::IntArrayRef{h, w}, at::IntArrayRef{-2, -1}, "backward");
}

namespace {
// Minus the mean, divided by the population std + 1e-5, over each image (Xplique's tf.reduce_mean
// and tf.math.reduce_std over its one image).
at::Tensor standardise(const at::Tensor& x) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < x.dim(); ++d) dims.push_back(d);
  at::Tensor c = x - x.mean(dims, /*keepdim=*/true);
  return c / (at::std(x, dims, /*unbiased=*/false, /*keepdim=*/true) + 1e-5);
}
}  // namespace

at::Tensor maco_image(const at::Tensor& magnitude, const at::Tensor& phase, int64_t h, int64_t w, bool decorrelate) {
  CANDELA_CHECK(phase.dim() == 4, "a MACO phase is [N, C, h, w/2+1], got ", detail::shape_str(phase.sizes()), ".");
  at::Tensor x = standardise(phase_to_image(magnitude, standardise(phase), h, w));
  if (decorrelate && x.size(1) == 3) x = decorrelate_colors(x);
  return at::sigmoid(x);
}

at::Tensor maco_default_magnitude(int64_t h, int64_t w, double decay_power) {
  return fourier_scale(h, w, decay_power).narrow(1, 0, w / 2 + 1).contiguous();
}

at::Tensor crop_and_resize(const at::Tensor& image, const at::Tensor& boxes, int64_t out_h, int64_t out_w) {
  CANDELA_CHECK(image.dim() == 4 && image.size(0) == 1, "crop_and_resize takes one image [1, C, H, W], got ",
                detail::shape_str(image.sizes()), ".");
  CANDELA_CHECK(boxes.dim() == 2 && boxes.size(1) == 4, "crop boxes are [n, 4] (y1, x1, y2, x2), got ",
                detail::shape_str(boxes.sizes()), ".");
  CANDELA_CHECK(out_h >= 1 && out_w >= 1, "crops need a size >= 1, got ", out_h, "x", out_w, ".");
  const int64_t n = boxes.size(0), h = image.size(2), w = image.size(3);
  const auto d = at::TensorOptions().dtype(at::kDouble);
  at::Tensor b = boxes.to(at::kDouble);
  // TensorFlow's sample positions in pixels: y1 (H-1) + i (y2 - y1) (H-1) / (out_h - 1), or the
  // box's centre for a single row; the same for x.
  auto positions = [&](const at::Tensor& lo, const at::Tensor& hi, int64_t out, int64_t side) {
    const double s = static_cast<double>(side - 1);
    if (out == 1) return ((lo + hi) * 0.5 * s).unsqueeze(1);
    at::Tensor i = at::arange(out, d).unsqueeze(0);
    return lo.unsqueeze(1) * s + i * ((hi - lo) * s / static_cast<double>(out - 1)).unsqueeze(1);
  };
  at::Tensor py = positions(b.select(1, 0), b.select(1, 2), out_h, h);  // [n, out_h]
  at::Tensor px = positions(b.select(1, 1), b.select(1, 3), out_w, w);  // [n, out_w]
  auto inside = [](const at::Tensor& p, int64_t side) {
    return at::logical_and(p >= 0, p <= static_cast<double>(side - 1));
  };
  at::Tensor mask = at::logical_and(inside(py, h).unsqueeze(2), inside(px, w).unsqueeze(1));  // [n, out_h, out_w]
  // grid_sample with align_corners: -1 and 1 are the corner pixels' centres; border padding
  // reads clamped pixels, and the mask zeroes the samples TensorFlow extrapolates.
  at::Tensor gy = h > 1 ? py * (2.0 / static_cast<double>(h - 1)) - 1.0 : at::zeros_like(py);
  at::Tensor gx = w > 1 ? px * (2.0 / static_cast<double>(w - 1)) - 1.0 : at::zeros_like(px);
  at::Tensor grid = at::stack({gx.unsqueeze(1).expand({n, out_h, out_w}), gy.unsqueeze(2).expand({n, out_h, out_w})}, -1)
                        .to(image.scalar_type());
  at::Tensor crops = at::grid_sampler(image.expand({n, image.size(1), h, w}), grid, /*bilinear*/ 0, /*border*/ 1,
                                      /*align_corners=*/true);
  return crops * mask.unsqueeze(1).to(image.scalar_type());
}

at::Tensor draw_maco_boxes(int64_t n, double box_size, at::Generator& gen) {
  const auto d = at::TensorOptions().dtype(at::kDouble);
  at::Tensor cx = at::randn({n}, gen, d) * 0.15 + 0.5;
  at::Tensor cy = at::randn({n}, gen, d) * 0.15 + 0.5;
  at::Tensor delta = (at::randn({n}, gen, d) * 0.05 + box_size).clamp(0.05, 1.0);  // square boxes
  return at::stack({cx - delta * 0.5, cy - delta * 0.5, cx + delta * 0.5, cy + delta * 0.5}, 1);
}

}  // namespace fv

at::Tensor maco_magnitude(const at::Tensor& images, int64_t size) {
  CANDELA_CHECK(images.defined() && images.dim() == 4 && images.size(0) >= 1 && images.size(2) >= 2 &&
                    images.size(3) >= 2,
                "a MACO spectrum is computed from images [N, C, H, W] (H, W >= 2), got ",
                images.defined() ? detail::shape_str(images.sizes()) : std::string("none"), ".");
  CANDELA_CHECK(size >= 2, "the MACO image size must be >= 2, got ", size, ".");
  at::NoGradGuard no_grad;
  at::Tensor mag = at::fft_rfft2(images.to(at::kFloat)).abs().mean(0);  // [C, H, W/2+1]
  if (mag.size(1) != size || mag.size(2) != size / 2 + 1)
    mag = at::upsample_bilinear2d(mag.unsqueeze(0), {size, size / 2 + 1}, /*align_corners=*/false)[0];
  return mag.contiguous();
}

at::Tensor maco_alpha_display(const at::Tensor& alpha, double percentile) {
  CANDELA_CHECK(alpha.dim() == 3, "a MACO alpha is [C, H, W], got ", detail::shape_str(alpha.sizes()), ".");
  at::Tensor a = alpha.to(at::kDouble).mean(0);
  double q = at::quantile(a.flatten(), percentile / 100.0).item<double>();
  // Where most of the image has no gradient (a small receptive field) the percentile is 0 and
  // plot_maco would divide 0 by 0: clip at the maximum instead.
  if (q <= 0) q = a.max().item<double>();
  a = a.clamp(0, q);
  const double top = a.max().item<double>();
  return (top > 0 ? a / top : a).to(at::kFloat);
}

namespace {

// The image parametrisation: parameters θ and θ -> images in [0, 1].
struct ImageParam {
  at::Tensor theta, scale;
  std::string kind;
  bool decorrelate = false;
  int64_t h = 0, w = 0;

  ImageParam(const FeatureVisualizationOptions& o, int64_t channels) : kind(o.param), h(o.size), w(o.size) {
    decorrelate = o.decorrelate && channels == 3;
    at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(o.seed));
    if (kind == "fourier") {
      scale = fv::fourier_scale(h, w, o.decay_power);
      theta = at::randn({o.batch, channels, scale.size(0), scale.size(1), 2}, gen) * o.sd;
    } else {
      theta = at::randn({o.batch, channels, h, w}, gen) * o.sd;
    }
    theta.requires_grad_(true);
  }
  at::Tensor image() const {
    at::Tensor x = kind == "fourier" ? fv::fourier_image(theta, scale, h, w) : theta;
    if (decorrelate) x = fv::decorrelate_colors(x);
    return at::sigmoid(x);
  }
};

using detail::Adam;  // detail/adam.h

}  // namespace

namespace {

// The model's input from [0, 1] images: to_range maps to the spec's value range (where MACO
// adds its noise, as Xplique does in values_range), normalise applies mean/std and the layout.
struct ModelInput {
  const InputSpec& spec;
  int64_t channels;
  at::Tensor to_range(const at::Tensor& x) const { return x * (spec.range_max - spec.range_min) + spec.range_min; }
  at::Tensor normalise(at::Tensor x) const {
    auto vec = [&](const std::vector<double>& v, double fill) {
      std::vector<float> f(static_cast<size_t>(channels), static_cast<float>(fill));
      for (size_t i = 0; i < f.size() && !v.empty(); ++i) f[i] = static_cast<float>(v.size() == 1 ? v[0] : v[i]);
      return at::tensor(f).reshape({1, channels, 1, 1});
    };
    if (!spec.mean.empty() || !spec.std.empty()) x = (x - vec(spec.mean, 0.0)) / vec(spec.std, 1.0);
    if (spec.layout == "NHWC") x = x.permute({0, 2, 3, 1}).contiguous();
    return x;
  }
};

// The size render_vis resizes the transformed batch to ({0, 0}: none); see the header.
std::pair<int64_t, int64_t> upsample_size(const FeatureVisualizationOptions& o, const InputSpec& spec) {
  const bool declared = spec.is_image();
  const bool lucent =
      o.upsample == "lucent" || (o.upsample == "auto" && (!declared || (spec.height() >= 224 && spec.width() >= 224)));
  if (lucent) return o.size < 224 ? std::pair<int64_t, int64_t>{224, 224} : std::pair<int64_t, int64_t>{0, 0};
  if ((o.upsample == "model" || o.upsample == "auto") && declared &&
      (spec.height() > o.size || spec.width() > o.size))
    return {spec.height(), spec.width()};
  return {0, 0};
}

// One optimisation step's bookkeeping: each term's value and the weighted total (maximised).
at::Tensor record_terms(const Objective& objective, const std::vector<at::Tensor>& values, FeatureVisualization& out) {
  at::Tensor total = at::zeros({}, values[0].options());
  double total_value = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    total = total + values[i] * objective.terms[i].weight;
    const double v = values[i].item<double>();
    out.terms[i].push_back(v);
    total_value += v * objective.terms[i].weight;
  }
  out.objective.push_back(total_value);
  CANDELA_CHECK(total.requires_grad(), "the objective does not depend on the image: is the model differentiable?");
  return total;
}

// One forward pass of the (transformed, normalised) images, through the taps when the objective
// reads layers, and the step's bookkeeping: the weighted total, maximised.
at::Tensor objective_step(const Model& model, const std::shared_ptr<const LayerTaps>& taps, const at::Tensor& x,
                          const Objective& objective, FeatureVisualization& out) {
  at::Tensor output;
  std::vector<at::Tensor> acts;
  if (taps) {
    auto run = taps->forward(x);
    output = run.output;
    acts = std::move(run.activations);
  } else {
    output = model.forward(x);
  }
  return record_terms(objective, objective_terms(objective, acts, output), out);
}

// The fixed MACO magnitude, [1 or C, size, size/2+1].
at::Tensor maco_fixed_magnitude(const FeatureVisualizationOptions& o, int64_t channels) {
  const int64_t h = o.size, wf = o.size / 2 + 1;
  if (!o.magnitude.defined()) return fv::maco_default_magnitude(h, o.size, o.decay_power).unsqueeze(0);
  at::Tensor m = o.magnitude.detach().to(at::kFloat);
  if (m.dim() == 2) m = m.unsqueeze(0);
  CANDELA_CHECK(m.dim() == 3 && (m.size(0) == 1 || m.size(0) == channels) && m.size(1) >= 1 && m.size(2) >= 1,
                "the MACO magnitude must be [", channels, " or 1, h, w'] for ", channels, "-channel images, got ",
                detail::shape_str(m.sizes()), "; compute it from images of the model's kind (maco_magnitude).");
  CANDELA_CHECK(at::isfinite(m).all().item<bool>() && (m >= 0).all().item<bool>(),
                "the MACO magnitude must be finite and >= 0.");
  if (m.size(1) != h || m.size(2) != wf)
    m = at::upsample_bilinear2d(m.unsqueeze(0), {h, wf}, /*align_corners=*/false)[0];  // tf.image.resize
  return m.contiguous();
}

// MACO (see the header): the phase under Nadam, crops and noise; the transparency on the side.
FeatureVisualization visualize_maco(const Model& model, const Objective& objective_in,
                                    const FeatureVisualizationOptions& options, const std::shared_ptr<const LayerTaps>& taps,
                                    const ModelInput& input, const ProgressCallback& progress, const CancelToken& cancel) {
  // One image: every term applies to it, and to each of its crops.
  Objective objective = objective_in;
  for (auto& t : objective.terms) {
    CANDELA_CHECK(t.kind != "diversity",
                  "diversity compares the images of a batch, but maco optimises one image; use param fourier or pixel.");
    t.batch = -1;
  }
  const InputSpec& spec = input.spec;
  const int64_t channels = input.channels, h = options.size, w = options.size;
  // Crops go to the model's input size (Xplique's model.input_shape); 224 when it declares none.
  const int64_t mh = spec.is_image() ? spec.height() : 224, mw = spec.is_image() ? spec.width() : 224;
  const at::Tensor magnitude = maco_fixed_magnitude(options, channels).unsqueeze(0);  // [1, 1 or C, h, w']
  at::Generator gen = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));
  at::Tensor phase = at::randn({1, channels, h, w / 2 + 1}, gen) * options.sd;
  phase.requires_grad_(true);
  detail::Nadam nadam;
  nadam.lr = options.lr;
  FeatureVisualization out;
  out.terms.assign(objective.terms.size(), {});
  at::Tensor alpha = at::zeros({1, channels, h, w});
  for (int64_t step = 0; step < options.steps; ++step) {
    if (cancel.cancelled()) throw Cancelled("feature visualisation cancelled at step " + std::to_string(step) + ".");
    // np.linspace(0.5, 0.05, nb_steps)[step], or the fixed box size.
    const double box = options.maco_box > 0  ? options.maco_box
                       : options.steps == 1 ? 0.5
                                            : 0.5 - 0.45 * static_cast<double>(step) / static_cast<double>(options.steps - 1);
    at::Tensor image = input.to_range(fv::maco_image(magnitude, phase, h, w, options.decorrelate));
    at::Tensor x;
    if (options.maco_crops > 0)
      x = fv::crop_and_resize(image, fv::draw_maco_boxes(options.maco_crops, box, gen), mh, mw);
    else
      x = mh == h && mw == w ? image : at::upsample_bilinear2d(image, {mh, mw}, /*align_corners=*/false);
    if (options.maco_noise > 0) {
      const double s = options.maco_noise;
      x = x + at::randn(x.sizes(), gen) * s + (at::rand(x.sizes(), gen) - 0.5) * s;
    }
    x = input.normalise(x);
    at::Tensor total = objective_step(model, taps, x, objective, out);
    auto grads = torch::autograd::grad({-total}, {phase, image});
    nadam.step(phase, grads[0]);
    alpha.add_(grads[1].detach().abs());
    ++out.model_evaluations;
    if (progress) progress({"visualize", step + 1, options.steps});
  }
  {
    at::NoGradGuard no_grad;
    out.images = fv::maco_image(magnitude, phase, h, w, options.decorrelate).detach();
  }
  out.alpha = alpha;
  return out;
}

}  // namespace

FeatureVisualization visualize(const Model& model, const Objective& objective,
                               const FeatureVisualizationOptions& options_in, const ProgressCallback& progress,
                               const CancelToken& cancel) {
  options_in.validate();
  const FeatureVisualizationOptions options = options_in.resolved();
  CANDELA_CHECK(!objective.terms.empty(), "the objective has no terms; write e.g. channel(layer4,12).");
  const auto start = std::chrono::steady_clock::now();
  const InputSpec& spec = model.input_spec();
  CANDELA_CHECK(spec.layout.empty() || spec.layout == "NCHW" || spec.layout == "NHWC",
                "feature visualisation optimises images, but the model's input layout is ", spec.layout,
                "; give an image model (--layout NCHW or NHWC with --input-shape C,H,W).");
  const int64_t channels = spec.is_image() ? spec.channels() : 3;
  for (const auto& t : objective.terms)
    CANDELA_CHECK(t.batch < options.batch, "objective term ", t.kind, "(...)[", t.batch, "] names an image beyond the batch of ",
                  options.batch, "; raise the batch option.");
  const std::vector<std::string> layers = objective.layers();
  std::shared_ptr<const LayerTaps> taps;
  if (!layers.empty()) taps = LayerTaps::of(model, layers);
  const ModelInput input{spec, channels};
  if (options.param == "maco") {
    FeatureVisualization out = visualize_maco(model, objective, options, taps, input, progress, cancel);
    out.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return out;
  }
  const auto [up_h, up_w] = upsample_size(options, spec);

  ImageParam param(options, channels);
  Adam adam;
  adam.lr = options.lr;
  std::mt19937_64 rng(static_cast<uint64_t>(options.seed) ^ 0x5DEECE66DULL);
  FeatureVisualization out;
  out.terms.assign(objective.terms.size(), {});
  for (int64_t step = 0; step < options.steps; ++step) {
    if (cancel.cancelled()) throw Cancelled("feature visualisation cancelled at step " + std::to_string(step) + ".");
    at::Tensor x = param.image();
    if (options.transforms == "standard") x = fv::standard_transforms(x, fv::draw_transforms(rng));
    if (up_h > 0) x = at::upsample_bilinear2d(x, {up_h, up_w}, /*align_corners=*/true);
    x = input.normalise(input.to_range(x));
    at::Tensor total = objective_step(model, taps, x, objective, out);
    at::Tensor grad = torch::autograd::grad({-total}, {param.theta})[0];
    adam.step(param.theta, grad);
    ++out.model_evaluations;
    if (progress) progress({"visualize", step + 1, options.steps});
  }
  {
    at::NoGradGuard no_grad;
    out.images = param.image().detach();
  }
  out.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace candela
