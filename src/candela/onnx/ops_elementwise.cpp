// Elementwise ONNX operators: unary math, binary and variadic arithmetic, comparisons and logic,
// activations, Clip, Where and casts.
#include <map>
#include <string>

#include "emit.h"

namespace candela::detail::onnx_import {
namespace {

const std::map<std::string, std::string> kUnary = {
    {"Relu", "torch.relu"},   {"Sigmoid", "torch.sigmoid"}, {"Tanh", "torch.tanh"},   {"Exp", "torch.exp"},
    {"Log", "torch.log"},     {"Sqrt", "torch.sqrt"},       {"Neg", "torch.neg"},     {"Abs", "torch.abs"},
    {"Reciprocal", "torch.reciprocal"}, {"Erf", "torch.erf"}, {"Floor", "torch.floor"}, {"Ceil", "torch.ceil"},
    {"Sign", "torch.sign"},   {"Not", "torch.logical_not"}, {"Sin", "torch.sin"},     {"Cos", "torch.cos"}};

const std::map<std::string, std::string> kBinary = {
    {"Add", "torch.add"}, {"Sub", "torch.sub"}, {"Mul", "torch.mul"}, {"Pow", "torch.pow"},
    {"Equal", "torch.eq"}, {"Greater", "torch.gt"}, {"Less", "torch.lt"}, {"GreaterOrEqual", "torch.ge"},
    {"LessOrEqual", "torch.le"}, {"And", "torch.logical_and"}, {"Or", "torch.logical_or"},
    {"Xor", "torch.logical_xor"}};

std::string unary(Emit& e) { return kUnary.at(e.op()) + "(" + e.x(0) + ")"; }

std::string binary(Emit& e) { return kBinary.at(e.op()) + "(" + e.x(0) + ", " + e.x(1) + ")"; }

// Max, Min, Sum and Mean take any number of inputs.
std::string variadic(Emit& e) {
  const std::string& op = e.op();
  if (e.in.size() == 1) return e.x(0);
  std::string acc = e.x(0);
  const std::string f = op == "Max" ? "torch.maximum" : op == "Min" ? "torch.minimum" : "torch.add";
  for (size_t k = 1; k < e.in.size(); ++k) acc = f + "(" + acc + ", " + e.in[k] + ")";
  return op == "Mean" ? acc + " / " + num(static_cast<double>(e.in.size())) : acc;
}

std::string divide(Emit& e) {
  if (e.is_integer(0) && e.is_integer(1)) return "torch.div(" + e.x(0) + ", " + e.x(1) + ", rounding_mode='trunc')";
  return "torch.div(" + e.x(0) + ", " + e.x(1) + ")";
}

std::string mod(Emit& e) {
  if (e.a.i("fmod", 0)) return "torch.fmod(" + e.x(0) + ", " + e.x(1) + ")";
  return "torch.remainder(" + e.x(0) + ", " + e.x(1) + ")";
}

std::string softsign(Emit& e) { return e.x(0) + " / (1 + torch.abs(" + e.x(0) + "))"; }

std::string leaky_relu(Emit& e) { return "torch.leaky_relu(" + e.x(0) + ", " + num(e.a.f("alpha", 0.01)) + ")"; }

std::string elu(Emit& e) { return "torch.elu(" + e.x(0) + ", " + num(e.a.f("alpha", 1.0)) + ")"; }

std::string celu(Emit& e) { return "torch.celu(" + e.x(0) + ", " + num(e.a.f("alpha", 1.0)) + ")"; }

std::string selu(Emit& e) {
  const double alpha = e.a.f("alpha", 1.67326319217681884765625), gamma = e.a.f("gamma", 1.05070102214813232421875);
  return num(gamma) + " * torch.where(" + e.x(0) + " > 0, " + e.x(0) + ", " + num(alpha) + " * (torch.exp(" + e.x(0) +
         ") - 1))";
}

std::string prelu(Emit& e) {
  // A per-channel slope [C] applies along dimension 1 (as PyTorch exports it).
  e.pre << "    sl = " << e.x(1) << "\n    if sl.dim() == 1 and " << e.x(0) << ".dim() > 2 and sl.size(0) == " << e.x(0)
        << ".size(1) and sl.size(0) > 1:\n        sl = sl.reshape([sl.size(0)] + [1 for d in range(" << e.x(0)
        << ".dim() - 2)])\n";
  return "torch.where(" + e.x(0) + " >= 0, " + e.x(0) + ", " + e.x(0) + " * sl)";
}

std::string thresholded_relu(Emit& e) {
  return "torch.where(" + e.x(0) + " > " + num(e.a.f("alpha", 1.0)) + ", " + e.x(0) + ", torch.zeros_like(" + e.x(0) +
         "))";
}

std::string hard_sigmoid(Emit& e) {
  return "torch.clamp(" + num(e.a.f("alpha", 0.2)) + " * " + e.x(0) + " + " + num(e.a.f("beta", 0.5)) + ", 0.0, 1.0)";
}

std::string hard_swish(Emit& e) { return "torch.hardswish(" + e.x(0) + ")"; }

std::string softplus(Emit& e) { return "torch.softplus(" + e.x(0) + ")"; }

std::string gelu(Emit& e) {
  return e.a.s("approximate", "none") == "tanh" ? "torch.gelu(" + e.x(0) + ", approximate='tanh')"
                                                : "torch.gelu(" + e.x(0) + ")";
}

std::string clip(Emit& e) {
  std::string lo = "None", hi = "None";
  if (e.opset < 11) {
    if (e.a.has("min")) lo = num(e.a.f("min", 0));
    if (e.a.has("max")) hi = num(e.a.f("max", 0));
  } else {
    if (e.has(1)) lo = e.is_const(1) ? num(e.const_at(1).item<double>()) : e.x(1);
    if (e.has(2)) hi = e.is_const(2) ? num(e.const_at(2).item<double>()) : e.x(2);
  }
  if (e.is_integer(0)) {
    if (lo != "None" && e.is_const(1)) lo = std::to_string(e.const_at(1).item<int64_t>());
    if (hi != "None" && e.is_const(2)) hi = std::to_string(e.const_at(2).item<int64_t>());
  }
  if (lo == "None" && hi == "None") return e.x(0);
  return "torch.clamp(" + e.x(0) + ", " + lo + ", " + hi + ")";
}

std::string where(Emit& e) { return "torch.where(" + e.x(0) + ", " + e.x(1) + ", " + e.x(2) + ")"; }

std::string identity(Emit& e) { return e.x(0); }

std::string cast(Emit& e) {
  const at::ScalarType t = scalar_type(static_cast<int32_t>(e.a.i("to", 1)), e.output(0));
  return e.x(0) + ".to(" + dtype_name(t) + ")";
}

std::string cast_like(Emit& e) { return e.x(0) + ".to(" + e.x(1) + ".dtype)"; }

}  // namespace

void add_elementwise_ops(OpTable& t) {
  for (const auto& [op, fn] : kUnary) t.add(op, unary);
  for (const auto& [op, fn] : kBinary) t.add(op, binary);
  for (const char* op : {"Max", "Min", "Sum", "Mean"}) t.add(op, variadic);
  t.add("Div", divide);
  t.add("Mod", mod);
  t.add("Softsign", softsign);
  t.add("LeakyRelu", leaky_relu);
  t.add("Elu", elu);
  t.add("Celu", celu);
  t.add("Selu", selu);
  t.add("PRelu", prelu);
  t.add("ThresholdedRelu", thresholded_relu);
  t.add("HardSigmoid", hard_sigmoid);
  t.add("HardSwish", hard_swish);
  t.add("Softplus", softplus);
  t.add("Gelu", gelu);
  t.add("Clip", clip);
  t.add("Where", where);
  t.add("Identity", identity);
  t.add("Cast", cast);
  t.add("CastLike", cast_like);
}

}  // namespace candela::detail::onnx_import
