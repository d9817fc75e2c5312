// ONNX operators that move, select or make values without arithmetic: reshaping, transposing,
// joining and splitting, slicing and gathering (Gather, GatherElements), shapes and ranges, tiling
// and padding.
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "emit.h"

namespace candela::detail::onnx_import {
namespace {

std::string flatten(Emit& e) {
  const int64_t axis = e.a.i("axis", 1);
  if (axis == 1) return "torch.flatten(" + e.x(0) + ", 1)";
  if (axis == 0) return e.x(0) + ".reshape([1, -1])";
  const std::string ax = axis < 0 ? "(" + e.x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
  return e.x(0) + ".reshape([int(torch.tensor(" + e.x(0) + ".shape[:" + ax + "]).prod()), -1])";
}

std::string reshape(Emit& e) {
  if (e.opset < 5) return "torch.reshape(" + e.x(0) + ", " + ints(e.a.is("shape")) + ")";
  if (e.a.i("allowzero", 0) != 0) e.unsupported("allowzero");
  // A 0 in the target shape keeps the input's dimension.
  if (e.is_const(1)) {
    const auto s = e.const_ints(1);
    std::vector<std::string> items;
    for (size_t k = 0; k < s.size(); ++k)
      items.push_back(s[k] == 0 ? e.x(0) + ".size(" + std::to_string(k) + ")" : std::to_string(s[k]));
    return "torch.reshape(" + e.x(0) + ", [" + join(items) + "])";
  }
  e.pre << "    s: List[int] = " << e.x(1) << ".tolist()\n"
        << "    for k in range(len(s)):\n        if s[k] == 0:\n            s[k] = " << e.x(0) << ".size(k)\n";
  return "torch.reshape(" + e.x(0) + ", s)";
}

std::string transpose(Emit& e) {
  auto perm = e.a.is("perm");
  if (perm.empty()) {
    const int64_t r = e.rank_of(0);
    if (r < 0) return e.x(0) + ".permute([d for d in range(" + e.x(0) + ".dim() - 1, -1, -1)])";
    for (int64_t d = r - 1; d >= 0; --d) perm.push_back(d);
  }
  return e.x(0) + ".permute(" + ints(perm) + ")";
}

// Squeeze and Unsqueeze: axes from the attribute (before opset 13) or the second input.
std::string squeeze(Emit& e) {
  const bool squeezing = e.op() == "Squeeze";
  std::vector<int64_t> axes;
  if (e.opset >= 13 && e.has(1)) {
    if (!e.is_const(1)) {
      const std::string l = e.list_input(1);
      e.pre << "    y = " << e.x(0) << "\n    r = y.dim()" << (squeezing ? "" : " + len(" + l + ")")
            << "\n    axes: List[int] = []\n    for q in " << l << ":\n        if q < 0:\n            q = q + r\n"
            << "        axes.append(q)\n";
      if (squeezing)
        e.pre << "    axes.sort(reverse=True)\n    for ax in axes:\n        y = y.squeeze(ax)\n";
      else
        e.pre << "    axes.sort()\n    for ax in axes:\n        y = y.unsqueeze(ax)\n";
      return "y";
    }
    axes = e.const_ints(1);
  } else {
    axes = e.a.is("axes");
  }
  if (squeezing) {
    if (axes.empty()) return "torch.squeeze(" + e.x(0) + ")";
    e.pre << "    y = " << e.x(0) << "\n    r = y.dim()\n";
    std::vector<std::string> norm;
    for (int64_t ax : axes) norm.push_back(ax < 0 ? "r + " + std::to_string(ax) : std::to_string(ax));
    e.pre << "    axes: List[int] = [" << join(norm)
          << "]\n    axes.sort(reverse=True)\n    for ax in axes:\n        y = y.squeeze(ax)\n";
    return "y";
  }
  e.pre << "    y = " << e.x(0) << "\n    r = y.dim() + " << axes.size() << "\n";
  std::vector<std::string> norm;
  for (int64_t ax : axes) norm.push_back(ax < 0 ? "r + " + std::to_string(ax) : std::to_string(ax));
  e.pre << "    axes: List[int] = [" << join(norm)
        << "]\n    axes.sort()\n    for ax in axes:\n        y = y.unsqueeze(ax)\n";
  return "y";
}

std::string concat(Emit& e) {
  std::vector<std::string> parts;
  for (const auto& s : e.in)
    if (!s.empty()) parts.push_back(s);
  return "torch.cat([" + join(parts) + "], " + std::to_string(e.a.i("axis", 0)) + ")";
}

std::string split(Emit& e) {
  const int64_t axis = e.a.i("axis", 0);
  std::vector<int64_t> sizes;
  if (e.opset >= 13 && e.has(1)) {
    if (!e.is_const(1)) return "torch.split(" + e.x(0) + ", " + e.list_input(1) + ", " + std::to_string(axis) + ")";
    sizes = e.const_ints(1);
  } else {
    sizes = e.a.is("split");
  }
  // No sizes: as many equal parts as outputs, the last one shorter.
  const int n = e.outputs();
  if (sizes.empty()) {
    e.pre << "    size = " << e.x(0) << ".size(" << axis << ")\n    chunk = (size + " << n - 1 << ") // " << n << "\n";
    return "torch.split(" + e.x(0) + ", chunk, " + std::to_string(axis) + ")";
  }
  return "torch.split(" + e.x(0) + ", " + ints(sizes) + ", " + std::to_string(axis) + ")";
}

// Clamps starts and ends as the spec says, per axis, at run time.
std::string slice(Emit& e) {
  std::string starts, ends, axes, steps;
  if (e.opset < 10) {
    starts = ints(e.a.is("starts"));
    ends = ints(e.a.is("ends"));
    axes = e.a.has("axes") ? ints(e.a.is("axes")) : "";
  } else {
    starts = e.list_input(1);
    ends = e.list_input(2);
    if (e.has(3)) axes = e.list_input(3);
    if (e.has(4)) steps = e.list_input(4);
  }
  std::ostringstream& pre = e.pre;
  pre << "    starts: List[int] = " << starts << "\n    ends: List[int] = " << ends << "\n";
  pre << "    axes: List[int] = " << (axes.empty() ? "[k for k in range(len(starts))]" : axes) << "\n";
  pre << "    steps: List[int] = " << (steps.empty() ? "[1 for k in range(len(starts))]" : steps) << "\n";
  pre << "    y = " << e.x(0) << "\n"
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

std::string gather(Emit& e) {
  const int64_t axis = e.a.i("axis", 0);
  const std::string ax = axis < 0 ? "(" + e.x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
  e.pre << "    ax = " << ax << "\n    idx = " << e.x(1) << ".long()\n    idx = torch.where(idx < 0, idx + " << e.x(0)
        << ".size(ax), idx)\n";
  return "torch.index_select(" + e.x(0) + ", ax, idx.reshape([-1])).reshape(" + e.x(0) + ".shape[:ax] + idx.shape + " +
         e.x(0) + ".shape[ax + 1:])";
}

// GatherElements: torch.gather along `axis`, negative indices counted from the end.
std::string gather_elements(Emit& e) {
  const int64_t axis = e.a.i("axis", 0);
  const std::string ax = axis < 0 ? "(" + e.x(0) + ".dim() + " + std::to_string(axis) + ")" : std::to_string(axis);
  e.pre << "    ax = " << ax << "\n    idx = " << e.x(1) << ".long()\n    idx = torch.where(idx < 0, idx + " << e.x(0)
        << ".size(ax), idx)\n";
  return "torch.gather(" + e.x(0) + ", ax, idx)";
}

std::string shape(Emit& e) {
  const int64_t start = e.a.i("start", 0);
  const std::string s = e.x(0) + ".shape";
  if (e.a.has("end"))
    return "torch.tensor(" + s + "[" + std::to_string(start) + ":" + std::to_string(e.a.i("end", 0)) + "])";
  return "torch.tensor(" + s + "[" + std::to_string(start) + ":])";
}

std::string size(Emit& e) { return "torch.tensor(" + e.x(0) + ".numel())"; }

// Broadcasts by adding zeros of the target shape (bools go through int).
std::string expand(Emit& e) {
  const std::string shape = e.list_input(1);
  e.pre << "    z = torch.zeros(" << shape << ").to(" << e.x(0) << ".dtype)\n";
  return "(" + e.x(0) + " + z) if " + e.x(0) + ".dtype != 11 else (" + e.x(0) + ".to(3) + z.to(3)).to(11)";
}

std::string tile(Emit& e) { return e.x(0) + ".repeat(" + e.list_input(1) + ")"; }

std::string constant_of_shape(Emit& e) {
  at::Tensor v = at::zeros({1}, at::kFloat);
  if (e.a.has("value")) v = e.tensor_attr("value");
  const std::string value = at::isFloatingType(v.scalar_type()) ? num(v.item<double>())
                            : v.scalar_type() == at::kBool     ? (v.item<bool>() ? "True" : "False")
                                                               : std::to_string(v.item<int64_t>());
  return "torch.full(" + e.list_input(0) + ", " + value + ").to(" + dtype_name(v.scalar_type()) + ")";
}

std::string range(Emit& e) {
  if (e.is_integer(0))
    return "torch.arange(int(" + e.x(0) + ".item()), int(" + e.x(1) + ".item()), int(" + e.x(2) + ".item())).to(" +
           e.x(0) + ".dtype)";
  return "torch.arange(float(" + e.x(0) + ".item()), float(" + e.x(1) + ".item()), float(" + e.x(2) +
         ".item())).to(" + e.x(0) + ".dtype)";
}

std::string pad(Emit& e) {
  std::vector<int64_t> pads;
  std::string value = "0.0";
  if (e.opset < 11) {
    pads = e.a.is("pads");
    value = num(e.a.f("value", 0.0));
  } else {
    if (!e.is_const(1)) {
      const std::string l = e.list_input(1);
      std::string value_d = "0.0";
      if (e.has(2)) value_d = e.is_const(2) ? num(e.const_at(2).item<double>()) : "float(" + e.x(2) + ".item())";
      if (e.a.s("mode", "constant") != "constant" || e.has(3)) e.unsupported("run-time pads with this mode");
      e.pre << "    h = len(" << l << ") // 2\n    tp: List[int] = []\n    for d in range(h - 1, -1, -1):\n"
            << "        tp.append(" << l << "[d])\n        tp.append(" << l << "[d + h])\n";
      return "torch.constant_pad_nd(" + e.x(0) + ", tp, " + value_d + ")";
    }
    pads = e.const_ints(1);
    if (e.has(2)) value = e.is_const(2) ? num(e.const_at(2).item<double>()) : "float(" + e.x(2) + ".item())";
    if (e.has(3)) e.unsupported("the axes input");
  }
  // ONNX pads are [begin per dim..., end per dim...]; LibTorch's are (begin, end) pairs from the
  // last dimension back, and trailing zero pairs can go.
  const auto dims = static_cast<int64_t>(pads.size() / 2);
  std::vector<int64_t> tp;
  for (int64_t d = dims - 1; d >= 0; --d) tp.push_back(pads[d]), tp.push_back(pads[d + dims]);
  while (tp.size() > 2 && tp[tp.size() - 1] == 0 && tp[tp.size() - 2] == 0) tp.resize(tp.size() - 2);
  const std::string mode = e.a.s("mode", "constant");
  if (mode == "constant") {
    if (e.is_integer(0)) value = std::to_string(static_cast<int64_t>(std::stod(value == "0.0" ? "0" : value)));
    return "torch.constant_pad_nd(" + e.x(0) + ", " + ints(tp) + ", " + value + ")";
  }
  const std::string fn = mode == "reflect" ? "torch.reflection_pad" : mode == "edge" ? "torch.replication_pad" : "";
  if (fn.empty()) e.unsupported("pad mode " + mode);
  const auto spatial = static_cast<int64_t>(tp.size() / 2);
  if (spatial < 1 || spatial > 3) e.unsupported("this padding");
  return fn + std::to_string(spatial) + "d(" + e.x(0) + ", " + ints(tp) + ")";
}

}  // namespace

void add_shape_ops(OpTable& t) {
  t.add("Flatten", flatten);
  t.add("Reshape", reshape);
  t.add("Transpose", transpose);
  t.add("Squeeze", squeeze);
  t.add("Unsqueeze", squeeze);
  t.add("Concat", concat);
  t.add("Split", split);
  t.add("Slice", slice);
  t.add("Gather", gather);
  t.add("GatherElements", gather_elements);
  t.add("Shape", shape);
  t.add("Size", size);
  t.add("Expand", expand);
  t.add("Tile", tile);
  t.add("ConstantOfShape", constant_of_shape);
  t.add("Range", range);
  t.add("Pad", pad);
}

}  // namespace candela::detail::onnx_import
