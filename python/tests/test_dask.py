"""candela.dask: shards on a LocalCluster equal one process, resume, and survive a killed worker."""
import glob
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

import candela
from conftest import fixture

distributed = pytest.importorskip("distributed")
from candela.dask import evaluate_dataset, explain_dataset, load_results  # noqa: E402

OPTS = {"n_steps": 16}


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(c)
    yield client
    client.close()
    c.close()


@pytest.fixture(scope="module")
def data():
    return fixture("digits_test.npy")


@pytest.fixture(scope="module")
def single(data):
    x = torch.from_numpy(np.load(data))
    return candela.explain(fixture("digits_cnn.pt"), x, "integrated_gradients", target=3, **OPTS).values


def close(a, b):
    return (a - b).abs().max().item() <= 1e-5 * max(b.abs().max().item(), 1e-12)


def test_two_workers_equal_one_process(tmp_path, cluster, data, single):
    r = explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", out=tmp_path, client=cluster,
                        labels=3, shard_size=4, progress=False, **OPTS)
    assert r["shards"] == 4 and r["explained"] == 4
    assert close(load_results(tmp_path), single)
    facts = [json.load(open(p)) for p in sorted(glob.glob(str(tmp_path / "shard-*.json")))]
    assert [f["rows"] for f in facts] == [4, 4, 4, 4]
    # Each shard reports the deltas the one-process run computes for its rows (any fixture's value).
    x = torch.from_numpy(np.load(data))
    want = candela.explain(fixture("digits_cnn.pt"), x, "integrated_gradients", target=3, **OPTS).convergence_delta
    got = torch.tensor([d for f in facts for d in f["convergence_delta"]])
    assert torch.allclose(got, want.double().float(), rtol=1e-4, atol=1e-5 * float(want.abs().max()) + 1e-7)
    assert not glob.glob(str(tmp_path / ".tmp-*"))


def test_a_scripted_module_and_an_array_ship_to_the_workers(tmp_path, cluster, data, single):
    model = torch.jit.load(fixture("digits_cnn.pt"))
    x = np.load(data)
    explain_dataset(model, x, "integrated_gradients", out=tmp_path, client=cluster, labels=[3] * len(x),
                    shard_size=5, progress=False, **OPTS)
    assert close(load_results(tmp_path), single)


def test_resume_skips_finished_shards_and_refuses_other_settings(tmp_path, cluster, data, single):
    kw = dict(out=tmp_path, client=cluster, labels=3, shard_size=4, progress=False)
    explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", **kw, **OPTS)
    before = {p: open(p, "rb").read() for p in glob.glob(str(tmp_path / "shard-*"))}
    r = explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", **kw, **OPTS)
    assert r["explained"] == 0 and r["skipped"] == 4
    os.unlink(tmp_path / "shard-00002.json")
    r = explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", **kw, **OPTS)
    assert r["explained"] == 1
    after = {p: open(p, "rb").read() for p in glob.glob(str(tmp_path / "shard-*"))}
    assert set(after) == set(before)
    assert all(np.array_equal(np.load(p), np.load(p)) for p in after if p.endswith(".npy"))
    assert close(load_results(tmp_path), single)
    with pytest.raises(ValueError, match="other settings"):
        explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", **kw, n_steps=8)


def test_a_killed_worker_loses_no_shard(tmp_path, cluster, data):
    # Slow shards of one row each, so the kill lands while shards are running.
    slow = {"n_steps": 6000}
    x = torch.from_numpy(np.load(data))
    want = candela.explain(fixture("digits_cnn.pt"), x, "integrated_gradients", target=3, **slow).values
    result = {}

    def run():
        result["r"] = explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", out=tmp_path,
                                      client=cluster, labels=3, shard_size=1, progress=False, **slow)
    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 300
    while not glob.glob(str(tmp_path / "shard-*.json")) and time.time() < deadline:
        time.sleep(0.05)
    pids = cluster.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    at_kill = len(glob.glob(str(tmp_path / "shard-*.json")))
    assert at_kill < 16, "every shard had finished before the kill: make the shards slower"
    t.join(600)
    assert not t.is_alive() and "r" in result
    finished = sorted(glob.glob(str(tmp_path / "shard-*.json")))
    assert len(finished) == 16
    assert not glob.glob(str(tmp_path / ".tmp-*"))
    assert close(load_results(tmp_path), want)
    # Resuming finds every shard finished and changes no file.
    r = explain_dataset(fixture("digits_cnn.pt"), data, "integrated_gradients", out=tmp_path, client=cluster,
                        labels=3, shard_size=1, progress=False, **slow)
    assert r["explained"] == 0
    cluster.wait_for_workers(2, timeout=120)


def test_evaluate_dataset_equals_one_process(tmp_path, cluster, data):
    x = torch.from_numpy(np.load(data))[:8]
    np.save(tmp_path / "x.npy", x.numpy())
    table = evaluate_dataset(fixture("digits_cnn.pt"), str(tmp_path / "x.npy"), ["saliency"],
                             ["sparseness", "deletion"], out=tmp_path / "ev", client=cluster, labels=3,
                             shard_size=4, progress=False)
    e = candela.explain(fixture("digits_cnn.pt"), x, "saliency", target=3)
    for metric in ("sparseness", "deletion"):
        s = candela.metrics.score(metric, fixture("digits_cnn.pt"), x, e.values, target=3, method="saliency")
        assert abs(table["saliency"][metric] - s.double().mean().item()) <= 1e-6 * max(1.0, abs(table["saliency"][metric]))


def test_the_cli_twin(tmp_path, data, single):
    import subprocess
    from conftest import CLI
    r = subprocess.run([CLI, "explain-dataset", "--model", fixture("digits_cnn.pt"), "--data", data, "--method",
                        "integrated_gradients", "--option", "n_steps=16", "--labels", "3", "--out", str(tmp_path),
                        "--shard-size", "8", "--workers", "1", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert close(load_results(tmp_path), single)
    r = subprocess.run([CLI, "explain-dataset", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Example" in r.stdout and "--scheduler" in r.stdout


def test_an_image_folder_is_read_as_the_cli_reads_images(tmp_path, cluster):
    import shutil
    import subprocess
    from conftest import CLI
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        shutil.copy(fixture(f"digit_{i}.png"), images / f"digit_{i}.png")
    explain_dataset(fixture("digits_cnn.pt"), images, "saliency", out=tmp_path / "out", client=cluster, labels=3,
                    shard_size=2, progress=False)
    got = load_results(tmp_path / "out")
    assert got.shape == (3, 1, 8, 8)
    for i in range(3):
        r = subprocess.run([CLI, "explain", "--quiet", "--model", fixture("digits_cnn.pt"), "--input",
                            str(images / f"digit_{i}.png"), "--method", "saliency", "--target", "3", "--out",
                            str(tmp_path / f"cli{i}")], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        want = torch.from_numpy(np.load(tmp_path / f"cli{i}" / "attributions.npy"))
        assert close(got[i:i + 1], want)
