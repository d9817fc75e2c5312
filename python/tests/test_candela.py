"""The Python package against the CLI, Captum's and Zennit's committed numbers, and closed forms."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import candela
from candela import attr
from conftest import CLI, fixture, reference

METHODS = [m["name"] for m in candela.methods()]
# Small settings that keep each method quick without changing what it computes (as the C++
# conformance suite's fast_options).
FAST = {"integrated_gradients": {"n_steps": 16}, "layer_integrated_gradients": {"n_steps": 16},
        "layer_conductance": {"n_steps": 16}, "neuron_integrated_gradients": {"n_steps": 16},
        "noise_tunnel": {"nt_samples": 3, "stdevs": 0.1}, "gradient_shap": {"n_samples": 6, "stdevs": 0.1},
        "expected_gradients": {"n_samples": 6}, "rise": {"n_masks": 64}, "lime": {"num_samples": 200},
        "kernel_shap": {"n_samples": 8}, "shapley_value_sampling": {"n_samples": 5}}
RULE_METHODS = {"guided_backprop", "deconvolution", "guided_grad_cam", "deep_lift", "deep_lift_shap", "lrp",
                "full_grad"}


def method_options(info):
    o = dict(FAST.get(info["name"], {}))
    if "layers" in info["options"]:
        o["layers"] = ["features.2"]
    if "neuron_selector" in info["options"]:
        o["neuron_selector"] = [3, 2, 2]
    return o


def quadrants():
    """Four 4x4 feature groups of an 8x8 digit, as `--features grid:4` makes them."""
    yy, xx = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    return ((yy // 4) * 2 + xx // 4).astype(np.int64).reshape(1, 1, 8, 8)


def run_cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory, digits_x):
    """Every method through `candela explain` on two digits, target 3."""
    tmp = tmp_path_factory.mktemp("cli")
    x = tmp / "x.npy"
    np.save(x, digits_x.numpy())
    mask = tmp / "mask.npy"
    np.save(mask, np.broadcast_to(quadrants(), (2, 1, 8, 8)).copy())
    out = {}
    for info in candela.methods():
        name = info["name"]
        args = ["explain", "--quiet", "--model", fixture("digits_cnn.pt"), "--input", str(x), "--method", name,
                "--target", "3", "--out", str(tmp / name)]
        for k, v in method_options(info).items():
            if k == "layers":
                args += ["--layer", v[0]]
            else:
                args += ["--option", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"]
        if info["family"] == "perturbation":
            args += ["--features", str(mask)]
        r = run_cli(*args)
        assert r.returncode == 0, f"{name}: {r.stderr}"
        out[name] = np.load(tmp / name / "attributions.npy")
    return out


def close(a, b, tol=1e-5):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(b).max(), 1e-12)
    return np.abs(a - b).max() / scale <= tol


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_clis_numbers(method, cli_results, digits, digits_x):
    info = candela.method_info(method)
    mask = torch.from_numpy(np.broadcast_to(quadrants(), (2, 1, 8, 8)).copy())
    kwargs = dict(target=3, **method_options(info))
    if info["family"] == "perturbation":
        kwargs["feature_mask"] = mask
    # The file (its sidecar gives the same input spec as the CLI's) and the ScriptModule object.
    by_path = candela.explain(fixture("digits_cnn.pt"), digits_x, method, **kwargs)
    assert by_path.values.shape == torch.Size(cli_results[method].shape)
    assert close(by_path.values.numpy(), cli_results[method]), method
    by_module = candela.explain(digits, digits_x, method, **kwargs)
    assert close(by_module.values.numpy(), cli_results[method]), method
    assert by_module.method == method
    if info["uses_target"]:
        assert by_module.targets == [3, 3]


class Eager(torch.nn.Module):
    """A plain nn.Module (not scripted): the engine calls it back for every batch."""

    def __init__(self, scripted):
        super().__init__()
        self.net = scripted
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in RULE_METHODS and
                                    "layers" not in candela.method_info(m)["options"]])
def test_a_plain_module_gives_the_scripted_numbers(method, digits, digits_x):
    info = candela.method_info(method)
    kwargs = dict(target=3, **method_options(info))
    if info["family"] == "perturbation":
        kwargs["feature_mask"] = torch.from_numpy(quadrants())
    eager = Eager(digits)
    a = candela.explain(eager, digits_x, method, **kwargs)
    b = candela.explain(digits, digits_x, method, **kwargs)
    assert eager.calls > 0
    assert close(a.values.numpy(), b.values.numpy()), method


def test_graph_methods_on_a_plain_module_say_to_script_it(digits, digits_x):
    for method, extra in [("lrp", {}), ("deep_lift", {}), ("grad_cam", {"layers": ["features.2"]})]:
        with pytest.raises((TypeError, ValueError), match="torch.jit.trace"):
            candela.explain(Eager(digits), digits_x, method, target=3, **extra)


# ---- Captum-style classes against Captum's and Zennit's own numbers (tests/reference, committed)
@pytest.fixture(scope="module")
def lrp_cnn():
    return torch.jit.load(reference("lrp_cnn.pt")), torch.from_numpy(np.load(reference("lrp_cnn_x.npy")))


def test_deeplift_equals_captums(lrp_cnn):
    model, x = lrp_cnn
    a, delta = attr.DeepLift(model).attribute(x, target=1, return_convergence_delta=True)
    assert close(a.numpy(), np.load(reference("captum_deeplift_zeros.npy")))
    ref = torch.from_numpy(np.load(reference("captum_deeplift_ref_baseline.npy")))
    b = attr.DeepLift(model).attribute(x, ref, 1)  # Captum's positional order: baselines, target
    assert close(b.numpy(), np.load(reference("captum_deeplift_ref.npy")))
    assert delta.shape == (x.shape[0],) and delta.abs().max() < 1e-3


def test_guided_grad_cam_equals_captums(lrp_cnn):
    model, x = lrp_cnn
    a = attr.GuidedGradCam(model, "4").attribute(x, target=1)
    assert close(a.numpy(), np.load(reference("captum_guided_grad_cam.npy")))


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                                       "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat"])
def test_lrp_equals_zennits(lrp_cnn, composite):
    model, x = lrp_cnn
    a = attr.LRP(model, composite=composite, low=[-3.0], high=[3.0]).attribute(x, target=1)
    assert close(a.numpy(), np.load(reference(f"lrp_cnn_{composite}.npy")))


def test_gradient_methods_equal_captums_definitions():
    """The fixtures' plain-autograd re-derivations of Captum's IG, Saliency and InputXGradient."""
    cases = json.load(open(fixture("reference_attributions.json")))
    classes = {"integrated_gradients": attr.IntegratedGradients, "saliency": attr.Saliency,
               "input_x_gradient": attr.InputXGradient}
    models = {}
    assert len(cases) >= 20
    for c in cases:
        model = models.setdefault(c["model"], torch.jit.load(fixture(c["model"])))
        x = torch.tensor(c["inputs"], dtype=torch.float32)
        x = x.reshape(x.shape[0], *json.load(open(fixture(c["model"].replace(".pt", ".json"))))["input"]["shape"])
        kwargs = dict(c["options"])
        if c["method"] == "integrated_gradients":
            base = c["baseline"]
            kwargs["baselines"] = 0.0 if base == "zeros" else base
        a = classes[c["method"]](model).attribute(x, target=c["targets"], **kwargs)
        want = np.asarray(c["values"], dtype=np.float64).reshape(a.shape)
        assert close(a.numpy(), want, 1e-4), (c["model"], c["method"], c["options"])


def test_integrated_gradients_of_a_linear_model_is_exact():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3).double().float()
    model = torch.jit.script(lin)
    x, b = torch.randn(4, 5), torch.randn(1, 5)
    a, delta = attr.IntegratedGradients(model).attribute(x, baselines=b, target=2, return_convergence_delta=True)
    assert torch.allclose(a, (x - b) * lin.weight[2].detach(), atol=1e-6)
    assert delta.abs().max() < 1e-5


def test_noise_tunnel_wraps_the_base_method(digits, digits_x):
    nt = attr.NoiseTunnel(attr.IntegratedGradients(digits))
    a = nt.attribute(digits_x, nt_type="smoothgrad", nt_samples=3, stdevs=0.1, target=3, n_steps=8)
    b = candela.explain(digits, digits_x, "noise_tunnel", target=3, base_method="integrated_gradients",
                        base_options={"n_steps": 8}, nt_samples=3, stdevs=0.1)
    assert torch.equal(a, b.values)


def test_layer_given_as_a_module(digits, digits_x):
    a = attr.LayerGradCam(digits, getattr(digits.features, "2")).attribute(digits_x, target=3)
    b = attr.LayerGradCam(digits, "features.2").attribute(digits_x, target=3)
    assert torch.equal(a, b)
    assert a.shape[-1] < digits_x.shape[-1] or a.shape[1] == 1  # Captum's: the layer's own resolution


def test_every_registered_method_has_a_class():
    classes = [getattr(attr, n) for n in attr.__all__]
    assert set(METHODS) <= {c.method for c in classes}


# ---- errors: the CLI's messages, as ValueError / TypeError
def test_errors_carry_the_clis_messages(tmp_path, digits, digits_x):
    np.save(tmp_path / "x.npy", digits_x.numpy())
    r = run_cli("explain", "--model", fixture("digits_cnn.pt"), "--input", str(tmp_path / "x.npy"),
                "--method", "integrated_gradient", "--out", str(tmp_path / "o"))
    assert r.returncode != 0
    with pytest.raises(ValueError) as e:
        candela.explain(digits, digits_x, "integrated_gradient")
    assert str(e.value) in r.stderr and "integrated_gradients" in str(e.value)
    r = run_cli("explain", "--model", fixture("digits_cnn.pt"), "--input", str(tmp_path / "x.npy"),
                "--method", "integrated_gradients", "--option", "n_step=3", "--out", str(tmp_path / "o"))
    with pytest.raises(ValueError) as e:
        candela.explain(digits, digits_x, "integrated_gradients", n_step=3)
    assert str(e.value) in r.stderr and "n_steps" in str(e.value)
    with pytest.raises(ValueError, match="n_steps"):
        attr.IntegratedGradients(digits).attribute(digits_x, target=3, n_steps=-1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        candela.explain(digits, "not a tensor", "saliency")
    with pytest.raises(ValueError):
        candela.explain(digits, torch.rand(2, 3, 5, 5), "saliency")  # wrong shape for the model
    with pytest.raises(ValueError, match="NaN"):
        candela.explain(digits, torch.full((1, 1, 8, 8), float("nan")), "saliency")
    with pytest.raises(TypeError):
        candela.explain(42, digits_x, "saliency")


def test_the_gil_is_released_while_the_engine_runs(digits):
    x = torch.rand(8, 1, 8, 8)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)
    t = threading.Thread(target=tick)
    t.start()
    calls = []
    try:
        time.sleep(0.05)
        while sum(b - a for a, b in calls) < 0.3:  # calls until 0.3 s were spent inside the engine
            start = time.perf_counter()
            candela.explain(digits, x, "integrated_gradients", target=3, n_steps=3000)
            calls.append((start, time.perf_counter()))
    finally:
        stop.set()
        t.join()
    inside = [s for s in ticks if any(a < s < b for a, b in calls)]
    # Held GIL: the thread cannot tick while a call runs. Released: about one tick per ms.
    assert len(inside) >= 10, (len(inside), calls)


def test_progress_reaches_python(digits, digits_x):
    seen = []
    candela.explain(digits, digits_x, "integrated_gradients", target=3, n_steps=64, batch_size=16,
                    progress=lambda stage, done, total: seen.append((stage, done, total)))
    main = [s for s in seen if s[0] == "integrated_gradients"]
    assert main and main[-1][1] == main[-1][2] >= 2 * 64  # 64 steps for each of the two digits
    assert all(a[1] <= b[1] for a, b in zip(main, main[1:]))


def test_explanation_object(digits, digits_x):
    e = candela.explain(digits, digits_x, "integrated_gradients", target=3, n_steps=16)
    assert e.convergence_delta.shape == (2,)
    # Completeness: the attributions sum to f(x) - f(0) up to the reported delta.
    with torch.no_grad():
        change = digits(digits_x)[:, 3] - digits(torch.zeros_like(digits_x))[:, 3]
    assert torch.allclose(e.values.sum((1, 2, 3)) - change, e.convergence_delta, atol=1e-5)
    assert "integrated_gradients" in repr(e)
    html = e._repr_html_()
    assert "integrated_gradients" in html and "<table>" in html


# ---- metrics
def test_sparseness_of_a_one_hot_map_is_its_closed_form(digits, digits_x):
    a = torch.zeros(2, 1, 8, 8)
    a[:, 0, 3, 4] = 1.0
    s = candela.metrics.sparseness(digits, digits_x, a, target=3)
    n = 64
    assert torch.allclose(s.double(), torch.full((2,), (n - 1) / n, dtype=torch.float64), atol=1e-6)


def test_completeness_error_of_integrated_gradients_is_its_delta(digits, digits_x):
    e = candela.explain(digits, digits_x, "integrated_gradients", target=3, n_steps=16)
    s = candela.metrics.completeness_error(digits, digits_x, e.values, target=3)
    assert torch.allclose(s.double(), e.convergence_delta.abs().double(), atol=1e-5)


def test_metrics_that_explain_again_need_a_method(digits, digits_x):
    a = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="method="):
        candela.metrics.max_sensitivity(digits, digits_x, a, target=3)


def test_evaluate_from_python_equals_the_cli(tmp_path, digits, digits_x):
    x = np.load(fixture("digits_test.npy"))[:6]
    np.save(tmp_path / "x.npy", x)
    r = run_cli("evaluate", "--quiet", "--model", fixture("digits_cnn.pt"), "--data", str(tmp_path / "x.npy"),
                "--methods", "saliency,input_x_gradient", "--metrics", "sparseness,deletion",
                "--out", str(tmp_path / "cli"))
    assert r.returncode == 0, r.stderr
    cli = json.load(open(tmp_path / "cli" / "results.json"))
    mine = candela.evaluate(digits, torch.from_numpy(x), ["saliency", "input_x_gradient"], ["sparseness", "deletion"],
                            out=tmp_path / "py")
    assert os.path.exists(tmp_path / "py" / "results.csv")
    for metric in ("sparseness", "deletion"):
        for method in ("saliency", "input_x_gradient"):
            a, b = mine["summary"][metric]["methods"][method], cli["summary"][metric]["methods"][method]
            assert a["n"] == b["n"] == 6 and a["rank"] == b["rank"]
            assert abs(a["mean"] - b["mean"]) <= 1e-6 * max(1.0, abs(b["mean"]))


def test_predict_and_info(digits, digits_x):
    from candela._core import predict
    with torch.no_grad():
        want = digits(digits_x)
    assert torch.allclose(predict(digits, digits_x), want, atol=1e-5)
    info = candela.run_job("info", model=fixture("digits_cnn.pt"))
    assert "features.2" in [l["name"] for l in info["layers"]]


def test_an_onnx_file_gives_the_scripted_numbers(digits, digits_x):
    a = attr.IntegratedGradients(fixture("digits_cnn_op17.onnx")).attribute(digits_x, target=3, n_steps=16)
    b = attr.IntegratedGradients(digits).attribute(digits_x, target=3, n_steps=16)
    assert close(a.numpy(), b.numpy())


def test_plot_draws_the_values(digits, digits_x):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    e = candela.explain(digits, digits_x, "saliency", target=3)
    fig = e.plot(index=1)
    image = fig.axes[0].images[0].get_array()
    assert np.allclose(np.asarray(image), e.values[1].sum(0).numpy())
    rows = torch.rand(3, 30)
    mlp = torch.jit.load(fixture("breast_cancer_mlp.pt"))
    fig = candela.explain(mlp, rows, "saliency", target=1).plot()
    assert len(fig.axes[0].patches) == 20  # the 20 largest of 30 features


def test_robustness_and_counterfactual_jobs_from_python(tmp_path):
    x = np.load(fixture("digits_test.npy"))
    r = candela.run_job("robustness", model=fixture("digits_cnn.pt"), data=fixture("digits_test.npy"),
                        attack="fgsm", eps=0.1, out=str(tmp_path / "rob"))
    assert r["attack"]["attack"] == "fgsm" and len(r["samples"]) == len(x)
    adv = np.load(tmp_path / "rob" / "adversarial.npy")
    assert adv.shape == x.shape and np.abs(adv - x).max() <= 0.1 + 1e-6  # pixel units: the spec is 0..1, mean 0, std 1
    np.save(tmp_path / "rows.npy", np.load(fixture("breast_cancer_test.npy"))[:2])
    c = candela.run_job("counterfactual", model=fixture("breast_cancer_mlp.pt"), input=str(tmp_path / "rows.npy"),
                        background=fixture("breast_cancer_train.npy"), target="opposite", count=2,
                        out=str(tmp_path / "cf"))
    assert c["method"] == "dice" and os.path.exists(tmp_path / "cf" / "counterfactuals.csv")
    with pytest.raises(ValueError, match="unknown job"):
        candela.run_job("anchors", model=fixture("breast_cancer_mlp.pt"))



def test_visualize_tcav_and_craft_jobs_from_python(tmp_path):
    v = candela.run_job("visualize", model=fixture("digits_cnn.pt"), layer="features.2", channels=[3], size=8,
                        steps=8, transforms="none", out=str(tmp_path / "vis"))
    assert len(v["objective"]) == 8 and os.path.exists(tmp_path / "vis" / "channel_3.png")
    x = np.load(fixture("digits_test.npy"))
    np.save(tmp_path / "concept.npy", x[:8])
    randoms = []
    for i in range(3):
        randoms.append(str(tmp_path / ("r%d.npy" % i)))
        np.save(randoms[-1], np.random.default_rng(i).random((8, 1, 8, 8), dtype=np.float32))
    t = candela.run_job("tcav", model=fixture("digits_cnn.pt"), layer="features.3", input=fixture("digits_test.npy"),
                        target="3", concepts=["digits=" + str(tmp_path / "concept.npy")], randoms=randoms,
                        cache="none", out=str(tmp_path / "tcav"))
    assert t["concepts"][0]["name"] == "digits" and 0 <= t["concepts"][0]["p_value"] <= 1
    c = candela.run_job("craft", model=fixture("digits_cnn.pt"), layer="features.3", input=fixture("digits_test.npy"),
                        target="3", number_of_concepts=2, patch_size=4, nb_design=8, out=str(tmp_path / "craft"))
    assert len(c["concepts"]) == 2 and os.path.exists(tmp_path / "craft" / "concept_0.png")
    p = candela.run_job("crp", model=fixture("digits_cnn.pt"), layer="features.2", input=fixture("digit_0.png"),
                        channels=[1], out=str(tmp_path / "crp"))
    assert len(p["samples"][0]["channel_relevance"]) == 16 and os.path.exists(tmp_path / "crp" / "channel_1.png")

def test_kernel_shap_takes_captums_per_sample_baselines(digits, digits_x):
    """Captum's KernelShap baselines are one baseline per sample: at baselines = inputs nothing changes,
    so every Shapley value is zero (a background distribution would mix the two rows instead)."""
    mask = torch.from_numpy(quadrants())
    a = attr.KernelShap(digits).attribute(digits_x, baselines=digits_x, target=3, feature_mask=mask, n_samples=16)
    assert a.abs().max() < 1e-6
    b = attr.KernelShap(digits).attribute(digits_x, baselines=digits_x.flip(0), target=3, feature_mask=mask,
                                          n_samples=16)
    assert b.abs().max() > 1e-4  # the test can fail: other baselines do move the output


def test_reuse_freed_memory_refits_freed_blocks_and_torch_still_works():
    """In a fresh process (it replaces torch's CPU allocator for the whole process): a 64 MiB tensor
    freed and asked for again comes back without fresh page faults (by default: 16384 each time)."""
    code = """
import resource, torch, candela
assert candela.reuse_freed_memory() is True
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
n = 16 << 20
torch.empty(n).fill_(1.0)
before = faults()
for _ in range(3):
    assert float(torch.empty(n).fill_(2.0)[-1]) == 2.0
assert faults() - before < n * 4 // 4096 // 8, faults() - before
x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
(x @ torch.eye(64)).sum().backward()
assert torch.equal(x.grad, torch.ones(64, 64))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "CANDELA_NO_MEMORY_REUSE"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_additional_forward_args_reach_the_model_as_captums_do():
    """text_bert_masked.pt is text_bert.pt called as Hugging Face's BERT is; with the padding mask it
    computes text_bert's function, so layer IG at the token embedding gives text_bert's numbers."""
    plain = torch.jit.load(fixture("text_bert.pt"))
    masked = torch.jit.load(fixture("text_bert_masked.pt"))
    x = torch.from_numpy(np.load(fixture("text_test_ids.npy"))[:3])  # int64 ids, as tokenizers give them
    mask = (x != 0).long()
    want = candela.explain(plain, x, "layer_integrated_gradients", layers="tok", n_steps=8).values
    for args in (mask, (mask,), (mask, None), {"attention_mask": mask}):
        got = candela.explain(masked, x, "layer_integrated_gradients", layers="tok", n_steps=8,
                              additional_forward_args=args).values
        assert torch.allclose(got, want, atol=1e-5 * max(1.0, want.abs().max().item())), type(args)
    lig = attr.LayerIntegratedGradients(masked, masked.tok)
    got = lig.attribute(x, additional_forward_args=(mask,), n_steps=8)
    assert torch.allclose(got, want, atol=1e-5 * max(1.0, want.abs().max().item()))
    # Without the mask the padding is attended to: other numbers.
    other = candela.explain(masked, x, "layer_integrated_gradients", layers="tok", n_steps=8).values
    assert (other - want).abs().max().item() > 1e-4
    with pytest.raises(ValueError, match="token_type_ids"):
        candela.explain(masked, x, "layer_integrated_gradients", layers="tok",
                        additional_forward_args={"token_types": mask})
    with pytest.raises(ValueError, match="3 values"):
        candela.explain(masked, x, "layer_integrated_gradients", layers="tok", additional_forward_args=(mask, mask, mask))
    with pytest.raises(ValueError, match="must be a tensor"):
        candela.explain(masked, x, "layer_integrated_gradients", layers="tok", additional_forward_args=(1,))
