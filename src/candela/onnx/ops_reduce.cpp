// ONNX reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceL1, ReduceL2, and ArgMax /
// ArgMin, and CumSum. ReduceProd, ReduceLogSum(Exp) and ReduceSumSquare are not imported.
#include <string>

#include "emit.h"

namespace candela::detail::onnx_import {
namespace {

// axes_input: the operator's opset takes the axes as its second input, not as an attribute.
std::string reduce(Emit& e, const std::string& fn, bool axes_input) {
  const auto& in = e.in;
  const bool keep = e.a.i("keepdims", 1) != 0;
  std::string axes;
  if (axes_input) {
    if (in.size() > 1 && !in[1].empty()) {
      axes = e.list_input(1);
      if (!e.is_const(1)) {
        // Empty run-time axes: all of them, or nothing with noop_with_empty_axes.
        e.pre << "    ax: List[int] = " << axes << "\n    if len(ax) == 0:\n";
        if (e.a.i("noop_with_empty_axes", 0) != 0) e.pre << "        return " << in[0] << "\n";
        else e.pre << "        ax = [d for d in range(" << in[0] << ".dim())]\n";
        axes = "ax";
      }
    }
  } else if (e.a.has("axes")) {
    axes = ints(e.a.is("axes"));
  }
  if (axes.empty() || axes == "[]") {
    if (e.a.i("noop_with_empty_axes", 0) != 0) return in[0];
    axes = "[d for d in range(" + in[0] + ".dim())]";
  }
  const std::string k = keep ? "True" : "False";
  if (fn == "mean") return "torch.mean(" + in[0] + ", " + axes + ", " + k + ")";
  if (fn == "sum") return "torch.sum(" + in[0] + ", " + axes + ", " + k + ")";
  if (fn == "max") return "torch.amax(" + in[0] + ", " + axes + ", " + k + ")";
  if (fn == "min") return "torch.amin(" + in[0] + ", " + axes + ", " + k + ")";
  if (fn == "l2") return "torch.sqrt(torch.sum(" + in[0] + " * " + in[0] + ", " + axes + ", " + k + "))";
  CANDELA_ASSERT(fn == "l1", "no ONNX reduction '", fn, "'.");
  return "torch.sum(torch.abs(" + in[0] + "), " + axes + ", " + k + ")";
}

// ReduceSum took its axes as an input from opset 13, the others from 18.
std::string reduce_mean(Emit& e) { return reduce(e, "mean", e.opset >= 18); }
std::string reduce_sum(Emit& e) { return reduce(e, "sum", e.opset >= 13); }
std::string reduce_max(Emit& e) { return reduce(e, "max", e.opset >= 18); }
std::string reduce_min(Emit& e) { return reduce(e, "min", e.opset >= 18); }
std::string reduce_l2(Emit& e) { return reduce(e, "l2", e.opset >= 18); }
std::string reduce_l1(Emit& e) { return reduce(e, "l1", e.opset >= 18); }

// CumSum along the axis input (a scalar or one-element tensor); `exclusive` shifts the sums by
// one (the first is zero), `reverse` sums from the end. The dtype is the input's.
std::string cumsum(Emit& e) {
  const bool exclusive = e.a.i("exclusive", 0) != 0, reverse = e.a.i("reverse", 0) != 0;
  if (e.is_const(1)) {
    const auto a = e.const_ints(1);
    if (a.size() != 1) e.unsupported("an axis input with " + std::to_string(a.size()) + " values");
    e.pre << "    ax = " << a[0] << "\n";
  } else {
    e.pre << "    ax = int(" << e.x(1) << ".reshape([-1])[0].item())\n";
  }
  e.pre << "    y = " << e.x(0) << "\n    if ax < 0:\n        ax = ax + y.dim()\n";
  if (reverse) e.pre << "    y = y.flip([ax])\n";
  e.pre << "    c = torch.cumsum(y, ax).to(y.dtype)\n";
  if (exclusive)
    e.pre << "    n = y.size(ax)\n    if n > 0:\n"
          << "        c = torch.cat([torch.zeros_like(y.narrow(ax, 0, 1)), c.narrow(ax, 0, n - 1)], ax)\n";
  if (reverse) e.pre << "    c = c.flip([ax])\n";
  return "c";
}

// ArgMax and ArgMin.
std::string arg_extreme(Emit& e) {
  if (e.a.i("select_last_index", 0) != 0) e.unsupported("select_last_index");
  return std::string(e.op() == "ArgMax" ? "torch.argmax(" : "torch.argmin(") + e.x(0) + ", " +
         std::to_string(e.a.i("axis", 0)) + ", " + (e.a.i("keepdims", 1) ? "True" : "False") + ")";
}

}  // namespace

void add_reduce_ops(OpTable& t) {
  t.add("ReduceMean", reduce_mean);
  t.add("ReduceSum", reduce_sum);
  t.add("ReduceMax", reduce_max);
  t.add("ReduceMin", reduce_min);
  t.add("ReduceL2", reduce_l2);
  t.add("ReduceL1", reduce_l1);
  t.add("ArgMax", arg_extreme);
  t.add("ArgMin", arg_extreme);
  t.add("CumSum", cumsum);
}

}  // namespace candela::detail::onnx_import
