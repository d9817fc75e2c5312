// The custom ops a rule graph is made of (not public API). Each computes its node's ordinary
// forward value; its backward implements a propagation rule instead of the gradient. Rule
// parameters are constant inputs of the op, so a printed graph says which rule runs where.
//
//   candela::rule_act(Tensor x, int kind, float[] p, int mode, float eps) -> Tensor
//       an activation; modes kGuided, kDeconv, kRescale (DeepLIFT, batch = [inputs; references])
//   candela::rule_maxpool(Tensor x, int[] kernel, int[] stride, int[] padding, int[] dilation,
//                         bool ceil_mode, float eps) -> Tensor      DeepLIFT's max-pool rule
//   candela::rule_affine(Tensor x, Tensor w, Tensor? b, bool conv, int[] stride, int[] padding,
//                        int[] dilation, bool transposed, int[] output_padding, int groups,
//                        int rule, float[] p, Tensor? low, Tensor? high) -> Tensor   LRP rules
//   candela::rule_pass(Tensor x, Tensor y) -> Tensor    value y, relevance passed to x as is
//   candela::rule_in(Tensor x) -> Tensor                identity; backward multiplies by x
//   candela::rule_out(Tensor y, float eps) -> Tensor    identity; backward divides by stab(y)
// rule_in / rule_out around a parameter-free linear op give zennit's Norm rule:
// R_in = x * J^T (R / stab(f(x))).
#pragma once

#include <cstdint>
#include <string>

namespace candela::detail {

// Activation kinds of rule_act; p holds the node's scalar arguments in schema order.
enum ActKind : int64_t {
  kRelu = 0,
  kLeakyRelu = 1,   // p = {negative_slope}
  kElu = 2,         // p = {alpha, scale, input_scale}
  kSigmoid = 3,
  kTanh = 4,
  kSoftplus = 5,    // p = {beta, threshold}
  kGelu = 6,        // p = {0: exact, 1: tanh approximation}
  kSilu = 7,
  kHardtanh = 8,    // p = {min, max}
};

enum ActMode : int64_t { kGuided = 1, kDeconv = 2, kRescale = 3 };

// LRP rules of rule_affine; p = {epsilon or stabilizer, gamma, alpha, beta, zero_bias}.
enum AffineRule : int64_t {
  kRuleGradient = 0,
  kRuleEpsilon = 1,
  kRuleAlphaBeta = 2,  // z-plus is alpha = 1, beta = 0
  kRuleGamma = 3,
  kRuleZBox = 4,
  kRuleWSquare = 5,
  kRuleFlat = 6,
  kRuleZero = 7,       // LRP-0: epsilon 0, relevance at z = 0 dropped
};

// The rule_affine code of an LRP rule (its row in lrp_rules.cpp's table).
int64_t affine_rule_code(const std::string& rule);

// Makes sure the ops are registered (they are, by static initialisation in rule_ops.cpp;
// calling this keeps the linker from dropping that object from a static library).
void register_rule_ops();

}  // namespace candela::detail
