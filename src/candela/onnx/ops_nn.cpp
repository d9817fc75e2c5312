// Neural-network layers among the ONNX operators: matrix products (MatMul, Gemm, Einsum),
// convolutions, pooling, normalisation, Softmax, Dropout and resizing. Hardmax and LpPool are
// not imported.
#include <string>
#include <vector>

#include "emit.h"

namespace candela::detail::onnx_import {
namespace {

std::string matmul(Emit& e) {
  if (e.is_const(1) && e.const_at(1).dim() == 2 && at::isFloatingType(e.const_at(1).scalar_type())) {
    e.replace_const(1, e.const_at(1).t().contiguous());
    return "torch.linear(" + e.x(0) + ", self.c1)";
  }
  return "torch.matmul(" + e.x(0) + ", " + e.x(1) + ")";
}

std::string gemm(Emit& e) {
  const double alpha = e.a.f("alpha", 1.0), beta = e.a.f("beta", 1.0);
  const bool ta = e.a.i("transA", 0) != 0, tb = e.a.i("transB", 0) != 0;
  const std::string A = ta ? e.x(0) + ".t()" : e.x(0);
  if (e.is_const(1) && alpha == 1.0 && (beta == 1.0 || !e.has(2)) &&
      (!e.has(2) || (e.is_const(2) && e.const_at(2).dim() <= 1))) {
    if (!tb) e.replace_const(1, e.const_at(1).t().contiguous());
    std::string bias = "None";
    if (e.has(2)) {
      const int64_t n = tb ? e.const_at(1).size(0) : e.const_at(1).size(1);
      e.replace_const(2, e.const_at(2).expand({n}).contiguous());
      bias = "self.c2";
    }
    return "torch.linear(" + A + ", self.c1, " + bias + ")";
  }
  const std::string B = tb ? e.x(1) + ".t()" : e.x(1);
  std::string out = "torch.matmul(" + A + ", " + B + ")";
  if (alpha != 1.0) out = num(alpha) + " * " + out;
  if (e.has(2)) out += " + " + (beta != 1.0 ? num(beta) + " * " : std::string()) + e.x(2);
  return out;
}

std::string einsum(Emit& e) {
  std::vector<std::string> parts;
  for (const auto& s : e.in) parts.push_back(s);
  return "torch.einsum('" + e.a.s("equation", "") + "', [" + join(parts) + "])";
}

// What Conv and ConvTranspose read alike.
struct ConvAttrs {
  int64_t dims;
  std::vector<int64_t> kernel, strides, dil;
  int64_t group;
  std::string bias, d;  // d: "1", "2" or "3", for the op's name
};

ConvAttrs conv_attrs(Emit& e) {
  const std::vector<int64_t> wshape = e.shape_of(1);
  if (wshape.size() < 3) e.unsupported("the weights' shape is unknown");
  const auto dims = static_cast<int64_t>(wshape.size()) - 2;
  if (dims < 1 || dims > 3) e.unsupported("only 1-d, 2-d and 3-d convolutions");
  ConvAttrs c;
  c.dims = dims;
  c.kernel = e.a.is("kernel_shape", std::vector<int64_t>(wshape.begin() + 2, wshape.end()));
  c.strides = e.a.is("strides", std::vector<int64_t>(dims, 1));
  c.dil = e.a.is("dilations", std::vector<int64_t>(dims, 1));
  c.group = e.a.i("group", 1);
  c.bias = e.has(2) ? e.x(2) : "None";
  c.d = std::to_string(dims);
  return c;
}

std::string conv(Emit& e) {
  const ConvAttrs c = conv_attrs(e);
  const auto pads = e.conv_pads(c.dims, c.kernel, c.strides, c.dil);
  std::vector<int64_t> sym;
  const std::string input = e.pad_if_asymmetric(e.x(0), pads, c.dims, sym, "0.0");
  return "torch.conv" + c.d + "d(" + input + ", " + e.x(1) + ", " + c.bias + ", " + ints(c.strides) + ", " + ints(sym) +
         ", " + ints(c.dil) + ", " + std::to_string(c.group) + ")";
}

std::string conv_transpose(Emit& e) {
  const ConvAttrs c = conv_attrs(e);
  const int64_t dims = c.dims;
  auto pads = e.a.is("pads", std::vector<int64_t>(2 * dims, 0));
  std::vector<int64_t> out_pad = e.a.is("output_padding", std::vector<int64_t>(dims, 0));
  e.check_len(pads, static_cast<size_t>(2 * dims), "pads");
  e.check_len(out_pad, static_cast<size_t>(dims), "output_padding");
  e.check_len(c.strides, static_cast<size_t>(dims), "strides");
  e.check_len(c.dil, static_cast<size_t>(dims), "dilations");
  if (e.a.has("output_shape") || e.a.s("auto_pad", "NOTSET") != "NOTSET") e.unsupported("output_shape / auto_pad");
  for (int64_t k = 0; k < dims; ++k)
    if (pads[k] != pads[k + dims]) e.unsupported("asymmetric pads");
  pads.resize(dims);
  return "torch.conv_transpose" + c.d + "d(" + e.x(0) + ", " + e.x(1) + ", " + c.bias + ", " + ints(c.strides) + ", " +
         ints(pads) + ", " + ints(out_pad) + ", " + std::to_string(c.group) + ", " + ints(c.dil) + ")";
}

// What MaxPool and AveragePool read alike.
struct PoolAttrs {
  int64_t dims;
  std::vector<int64_t> kernel, strides, dil, pads;
  bool ceil;
  std::string d;
  bool wide;  // a pad wider than half the kernel
};

PoolAttrs pool_attrs(Emit& e) {
  if (e.outputs() > 1) e.unsupported("the indices output");
  PoolAttrs p;
  p.kernel = e.a.is("kernel_shape");
  const auto dims = static_cast<int64_t>(p.kernel.size());
  if (dims < 1 || dims > 3) e.unsupported("1-d to 3-d pooling");
  p.dims = dims;
  p.strides = e.a.is("strides", std::vector<int64_t>(dims, 1));
  p.dil = e.a.is("dilations", std::vector<int64_t>(dims, 1));
  p.pads = e.conv_pads(dims, p.kernel, p.strides, p.dil);
  p.ceil = e.a.i("ceil_mode", 0) != 0;
  p.d = std::to_string(dims);
  // LibTorch pools pad at most half the kernel: wider pads become an explicit pad.
  p.wide = false;
  for (int64_t k = 0; k < dims; ++k) p.wide |= p.pads[k] > p.kernel[k] / 2 || p.pads[k + dims] > p.kernel[k] / 2;
  return p;
}

std::string max_pool(Emit& e) {
  const PoolAttrs p = pool_attrs(e);
  const int64_t dims = p.dims;
  if (e.a.i("storage_order", 0) != 0) e.unsupported("storage_order 1");
  if (p.wide) {
    std::vector<int64_t> tp;
    for (int64_t d = dims - 1; d >= 0; --d) tp.push_back(p.pads[d]), tp.push_back(p.pads[d + dims]);
    e.pre << "    xp = torch.constant_pad_nd(" << e.x(0) << ", " << ints(tp) << ", float('-inf'))\n";
    return "torch.max_pool" + p.d + "d(xp, " + ints(p.kernel) + ", " + ints(p.strides) + ", " +
           ints(std::vector<int64_t>(dims, 0)) + ", " + ints(p.dil) + ", " + (p.ceil ? "True" : "False") + ")";
  }
  std::vector<int64_t> sym;
  const std::string input = e.pad_if_asymmetric(e.x(0), p.pads, dims, sym, "float('-inf')");
  return "torch.max_pool" + p.d + "d(" + input + ", " + ints(p.kernel) + ", " + ints(p.strides) + ", " + ints(sym) +
         ", " + ints(p.dil) + ", " + (p.ceil ? "True" : "False") + ")";
}

std::string average_pool(Emit& e) {
  const PoolAttrs p = pool_attrs(e);
  const int64_t dims = p.dims;
  for (int64_t k : p.dil)
    if (k != 1) e.unsupported("dilated average pooling");
  const bool include = e.a.i("count_include_pad", 0) != 0;
  if (p.wide) {
    if (!include) e.unsupported("pads wider than half the kernel without count_include_pad");
    std::vector<int64_t> tp;
    for (int64_t k = dims - 1; k >= 0; --k) tp.push_back(p.pads[k]), tp.push_back(p.pads[k + dims]);
    e.pre << "    xp = torch.constant_pad_nd(" << e.x(0) << ", " << ints(tp) << ", 0.0)\n";
    return "torch.avg_pool" + p.d + "d(xp, " + ints(p.kernel) + ", " + ints(p.strides) + ", " +
           ints(std::vector<int64_t>(dims, 0)) + ", " + (p.ceil ? "True" : "False") + ", True)";
  }
  bool symmetric = true;
  for (int64_t k = 0; k < dims; ++k) symmetric &= p.pads[k] == p.pads[k + dims];
  if (!symmetric) e.unsupported("asymmetric pads");
  const std::vector<int64_t> sym(p.pads.begin(), p.pads.begin() + dims);
  return "torch.avg_pool" + p.d + "d(" + e.x(0) + ", " + ints(p.kernel) + ", " + ints(p.strides) + ", " + ints(sym) +
         ", " + (p.ceil ? "True" : "False") + ", " + (include ? "True" : "False") + ")";
}

std::string global_average_pool(Emit& e) {
  if (e.rank_of(0) == 4) return "torch.adaptive_avg_pool2d(" + e.x(0) + ", [1, 1])";
  return "torch.mean(" + e.x(0) + ", [d for d in range(2, " + e.x(0) + ".dim())], True)";
}

std::string global_max_pool(Emit& e) {
  return "torch.amax(" + e.x(0) + ", [d for d in range(2, " + e.x(0) + ".dim())], True)";
}

std::string batch_norm(Emit& e) {
  if (e.outputs() > 1) e.unsupported("training mode (running statistics as outputs)");
  return "torch.batch_norm(" + e.x(0) + ", " + e.x(1) + ", " + e.x(2) + ", " + e.x(3) + ", " + e.x(4) +
         ", False, 0.1, " + num(e.a.f("epsilon", 1e-5)) + ", False)";
}

std::string instance_norm(Emit& e) {
  return "torch.instance_norm(" + e.x(0) + ", " + e.x(1) + ", " + e.x(2) + ", None, None, True, 0.0, " +
         num(e.a.f("epsilon", 1e-5)) + ", False)";
}

std::string layer_norm(Emit& e) {
  const int64_t axis = e.a.i("axis", -1);
  const std::string ax = axis < 0 ? "(" + e.x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
  const std::string y = "torch.layer_norm(" + e.x(0) + ", " + e.x(0) + ".shape[" + ax + ":], " + e.x(1) + ", " +
                        (e.has(2) ? e.x(2) : "None") + ", " + num(e.a.f("epsilon", 1e-5)) + ")";
  if (e.outputs() == 1) return y;
  e.pre << "    dims = [d for d in range(" << ax << ", " << e.x(0) << ".dim())]\n"
        << "    mu = torch.mean(" << e.x(0) << ", dims, True)\n"
        << "    var = torch.mean((" << e.x(0) << " - mu) * (" << e.x(0) << " - mu), dims, True)\n";
  return "(" + y + ", mu, torch.rsqrt(var + " + num(e.a.f("epsilon", 1e-5)) + "))";
}

// Softmax and LogSoftmax.
std::string softmax(Emit& e) {
  const std::string fn = e.op() == "Softmax" ? "torch.softmax" : "torch.log_softmax";
  const int64_t axis = e.a.i("axis", e.opset >= 13 ? -1 : 1);
  if (e.opset >= 13) return fn + "(" + e.x(0) + ", " + std::to_string(axis) + ")";
  // Before opset 13: over the input flattened to 2-d at `axis`.
  const std::string ax = axis < 0 ? "(" + e.x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
  return fn + "(" + e.x(0) + ".reshape(" + e.x(0) + ".shape[:" + ax + "] + [-1]), -1).reshape(" + e.x(0) + ".shape)";
}

// Inference: the input, and an all-true mask when the graph asks for one.
std::string dropout(Emit& e) {
  if (e.outputs() > 1) return "(" + e.x(0) + ", torch.ones_like(" + e.x(0) + ").to(11))";
  return e.x(0);
}

// Resize and Upsample.
std::string resize(Emit& e) {
  // Separable, explicit index maps: every coordinate transformation and nearest mode of
  // the spec, and linear interpolation with clamped neighbours (cubic is not imported).
  const std::string& op = e.op();
  const std::string mode = e.a.s("mode", "nearest");
  if (mode != "nearest" && mode != "linear") e.unsupported("mode " + mode);
  std::string coord = "asymmetric", nearest = "floor";
  if (op == "Resize" && e.opset >= 11) {
    coord = e.a.s("coordinate_transformation_mode", "half_pixel");
    nearest = e.a.s("nearest_mode", "round_prefer_floor");
  }
  if (coord == "tf_crop_and_resize") e.unsupported("tf_crop_and_resize");
  if (e.a.i("exclude_outside", 0) != 0 || e.a.has("axes") || e.a.s("keep_aspect_ratio_policy", "stretch") != "stretch")
    e.unsupported("exclude_outside / axes / keep_aspect_ratio_policy");
  const int64_t rank = e.rank_of(0) > 0 ? e.rank_of(0) : 4;
  std::string scales, sizes;
  if (op == "Upsample" && e.opset < 9) {
    std::vector<std::string> v;
    for (double f : e.a.fs("scales")) v.push_back(num(f));
    scales = "[" + join(v) + "]";
  } else {
    const int si = op == "Upsample" || e.opset < 11 ? 1 : 2;
    if (e.has(si) && !(e.is_const(si) && e.const_at(si).numel() == 0)) {
      e.pre << "    sc: List[float] = " << e.x(si) << ".to(7).tolist()\n";
      scales = "sc";
    }
    if (op == "Resize" && e.opset >= 11 && e.has(3)) sizes = e.list_input(3);
  }
  CANDELA_CHECK_T(UnsupportedModel, !scales.empty() || !sizes.empty(), "ONNX ", op, " node '", e.name(),
                  "' has neither scales nor sizes.");
  std::ostringstream& pre = e.pre;
  pre << "    y = " << e.x(0) << "\n";
  for (int64_t ax = 0; ax < rank; ++ax) {
    const std::string A = std::to_string(ax);
    pre << "    n_in = y.size(" << A << ")\n";
    if (!sizes.empty()) {
      pre << "    n_out = " << sizes << "[" << A << "]\n    s = float(n_out) / float(n_in)\n";
    } else {
      pre << "    s = " << scales << "[" << A << "]\n    n_out = int(float(n_in) * s)\n";
    }
    pre << "    if n_out != n_in or s != 1.0:\n";
    pre << "        dst = torch.arange(n_out).to(7)\n";
    if (coord == "half_pixel") pre << "        xo = (dst + 0.5) / s - 0.5\n";
    else if (coord == "pytorch_half_pixel") pre << "        xo = (dst + 0.5) / s - 0.5 if n_out > 1 else dst * 0.0\n";
    else if (coord == "align_corners")
      // The spec's length_resized is n_in * scale before rounding (2.4 for 4 x 0.6, not 2).
      pre << "        den = float(n_in) * s - 1.0\n"
          << "        xo = dst * float(n_in - 1) / den if den != 0.0 else dst * 0.0\n";
    else if (coord == "asymmetric") pre << "        xo = dst / s\n";
    else if (coord == "tf_half_pixel_for_nn") pre << "        xo = (dst + 0.5) / s\n";
    else e.unsupported("coordinate_transformation_mode " + coord);
    if (mode == "nearest") {
      std::string r;
      if (nearest == "round_prefer_floor") r = "torch.ceil(xo - 0.5)";
      else if (nearest == "round_prefer_ceil") r = "torch.floor(xo + 0.5)";
      else if (nearest == "floor") r = "torch.floor(xo)";
      else if (nearest == "ceil") r = "torch.ceil(xo)";
      else e.unsupported("nearest_mode " + nearest);
      pre << "        idx = torch.clamp(" << r << ", 0.0, float(n_in - 1)).to(4).to(y.device)\n"
          << "        y = torch.index_select(y, " << A << ", idx)\n";
    } else {
      pre << "        xo = torch.clamp(xo, 0.0, float(n_in - 1))\n        i0 = torch.floor(xo)\n"
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

}  // namespace

void add_nn_ops(OpTable& t) {
  t.add("MatMul", matmul);
  t.add("Gemm", gemm);
  t.add("Einsum", einsum);
  t.add("Conv", conv);
  t.add("ConvTranspose", conv_transpose);
  t.add("MaxPool", max_pool);
  t.add("AveragePool", average_pool);
  t.add("GlobalAveragePool", global_average_pool);
  t.add("GlobalMaxPool", global_max_pool);
  t.add("BatchNormalization", batch_norm);
  t.add("InstanceNormalization", instance_norm);
  t.add("LayerNormalization", layer_norm);
  t.add("Softmax", softmax);
  t.add("LogSoftmax", softmax);
  t.add("Dropout", dropout);
  t.add("Resize", resize);
  t.add("Upsample", resize);
}

}  // namespace candela::detail::onnx_import
