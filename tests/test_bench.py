"""The bench runs end to end and writes the documented JSON; speeds are reported, never asserted."""

import json

from bench.run import TARGETS, run_bench


def test_quick_bench_writes_every_measure(tmp_path):
    """Every measure, each side in its own process, at 32 px: the protocol and the JSON, not the speeds."""
    out = tmp_path / "bench.json"
    results = run_bench(quick=True, images=24, batch_size=8, workers=0, json_path=str(out), image_size=32)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert {"cores", "peak_gflops", "torch"} <= set(data["machine"])
    assert [m["name"] for m in data["measures"]] == list(TARGETS)
    for m in data["measures"]:
        assert {"name", "unit", "baseline", "imgcls", "ratio", "target"} <= set(m)
        assert m["baseline"] > 0 and m["imgcls"] > 0 and m["ratio"] > 0
        assert m["baseline_peak_rss_mb"] > 0 and m["imgcls_peak_rss_mb"] > 0
    assert data["settings"]["image_size"] == 32
    (pipeline,) = [m for m in data["measures"] if m["name"] == "pipeline"]
    assert "tensor pipeline on cpu" in pipeline["imgcls_note"]


def test_only_runs_the_named_measures_and_cuda_needs_a_gpu(tmp_path, monkeypatch):
    import pytest
    import torch

    import bench.run as bench
    from imgcls.core.errors import ImgclsError

    ran = []

    def fake_worker(measure, side, args, env):  # the worker protocol itself runs in the test above
        ran.append((measure, side))
        return {"value": 2.0, "unit": "img/s", "peak_rss_mb": 1.0, "worker_peak_rss_mb": 0.0, "note": "n"}

    monkeypatch.setattr(bench, "_run_worker", fake_worker)
    monkeypatch.setattr(bench, "make_photos", lambda root, n: None)
    results = run_bench(quick=True, images=24, batch_size=8, workers=0, only=["pipeline"])
    (m,) = results["measures"]
    assert m["name"] == "pipeline" and m["unit"] == "img/s" and m["imgcls_note"] == "n"
    assert ran == [("pipeline", "baseline"), ("pipeline", "imgcls")]
    ran.clear()
    run_bench(quick=True, images=24, batch_size=8, workers=0, only=["partial"])  # borrows full_finetune's baseline
    assert ran == [("full_finetune", "baseline"), ("partial", "imgcls")]
    monkeypatch.undo()
    with pytest.raises(ImgclsError, match="no such measure"):
        run_bench(quick=True, only=["warp_speed"])
    if not torch.cuda.is_available():
        with pytest.raises(ImgclsError, match="no CUDA device"):
            run_bench(quick=True, accelerator="cuda")


def test_gpu_plan_covers_the_reference_models():
    from bench.run import GPU_MODELS, _plan

    names = [p[0] for p in _plan("cuda", None)]
    assert names == ["pipeline", "head_epoch", *(f"full_finetune:{m}" for m in GPU_MODELS), "inference"]
    assert {p[2].get("model") for p in _plan("cuda", None) if p[1] == "gpu_full_finetune"} == set(GPU_MODELS)
    assert [p[0] for p in _plan("cpu", ["partial"])] == ["partial"]


def test_gpu_bench_measures_run_on_cpu_tensors(tmp_path, monkeypatch):
    """The GPU plan's worker functions, run on the CPU with tiny sizes: their code runs here, their
    numbers come from a GPU machine (scripts/gpu-check.sh)."""
    from bench import worker as bench_worker
    from bench.run import make_photos

    monkeypatch.setenv("IMGCLS_ENGINE", "torch")  # no ONNX export of the frozen backbone: seconds saved
    make_photos(tmp_path / "data", 22)
    a = dict(
        data=str(tmp_path / "data"),
        tmp=str(tmp_path),
        batch_size=4,
        workers=0,
        repeats=1,
        full_images=8,
        device="cpu",
        model="efficientnet_b0",
        image_size=32,
    )
    # The baseline sides are _baseline_loop, which the quick bench above runs already.
    full = bench_worker.measure_gpu_full_finetune("imgcls", a)
    head = bench_worker.measure_gpu_head_epoch("imgcls", a)
    assert full["unit"] == "img/s" and full["value"] > 0
    assert head["unit"] == "s/10k img" and head["value"] > 0
    assert full["gpu_busy"] is None  # no CUDA events without a GPU
