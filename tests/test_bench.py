"""The bench runs end to end and writes the documented JSON; speeds are reported, never asserted."""

import json

import pytest

from bench.measures import GPU_MODELS, MEASURES, Measure
from bench.run import TARGETS, plan, run_bench
from bench.settings import Result
from imgcls.core.errors import ImgclsError

# The measures the suite runs for real (each side in its own process): a training measure that borrows
# another's baseline, inference and the data pipeline. All of them run with `python -m bench --quick`
# (about a minute) whenever numbers are taken for docs/BENCHMARKS.md.
SUITE = ["partial", "inference", "pipeline"]


def test_quick_bench_runs_its_sides_in_processes_and_writes_the_json(tmp_path):
    """At 32 px: the protocol and the JSON, not the speeds."""
    out = tmp_path / "bench.json"
    results = run_bench(quick=True, images=24, batch_size=8, workers=0, json_path=str(out), image_size=32, only=SUITE)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert {"cores", "peak_gflops", "torch"} <= set(data["machine"])
    assert [m["name"] for m in data["measures"]] == [name for name in TARGETS if name in SUITE]
    for m in data["measures"]:
        assert {"name", "unit", "baseline", "imgcls", "ratio", "target"} <= set(m)
        assert m["baseline"] > 0 and m["imgcls"] > 0 and m["ratio"] > 0
        assert m["baseline_peak_rss_mb"] > 0 and m["imgcls_peak_rss_mb"] > 0
    assert data["settings"]["image_size"] == 32
    (pipeline,) = [m for m in data["measures"] if m["name"] == "pipeline"]
    assert "tensor pipeline on cpu" in pipeline["imgcls_note"]


def test_only_runs_the_named_measures_and_borrows_baselines(monkeypatch):
    import torch

    import bench.run as bench

    ran = []

    def fake_run(m: Measure, side, settings, env):  # the process protocol itself runs in the test above
        ran.append((m.name, side))
        return Result(2.0, "img/s", note="n", peak_rss_mb=1.0)

    monkeypatch.setattr(bench, "make_photos", lambda root, n: None)
    results = run_bench(quick=True, images=24, batch_size=8, workers=0, only=["pipeline"], run=fake_run)
    (m,) = results["measures"]
    assert m["name"] == "pipeline" and m["unit"] == "img/s" and m["imgcls_note"] == "n"
    assert ran == [("pipeline", "baseline"), ("pipeline", "imgcls")]
    ran.clear()
    (m,) = run_bench(quick=True, images=24, batch_size=8, workers=0, only=["partial"], run=fake_run)["measures"]
    assert ran == [("full_finetune", "baseline"), ("partial", "imgcls")]  # borrowed, and per epoch
    assert m["unit"] == "s/epoch" and m["baseline"] == pytest.approx(24 / 2.0)
    with pytest.raises(ImgclsError, match="no such measure"):
        run_bench(quick=True, only=["warp_speed"])
    if not torch.cuda.is_available():
        with pytest.raises(ImgclsError, match="no CUDA device"):
            run_bench(quick=True, accelerator="cuda")


def test_the_table_names_each_measure_once_per_accelerator():
    names = [m.name for m in plan("cuda", None)]
    assert names == ["pipeline", "head_epoch", *(f"full_finetune:{m}" for m in GPU_MODELS), "inference"]
    assert {m.model for m in plan("cuda", None) if m.name.startswith("full_finetune:")} == set(GPU_MODELS)
    for accelerator in ("cpu", "cuda"):
        rows = [m for m in MEASURES if m.accelerator == accelerator]
        assert len({m.name for m in rows}) == len(rows)
        assert all((m.baseline is None) == (m.borrow is not None) for m in rows)


def test_gpu_measures_run_on_cpu_tensors(tmp_path, monkeypatch):
    """The GPU table's sides, run on the CPU with tiny sizes: their code runs here, their numbers come from
    a GPU machine (scripts/gpu-check.sh)."""
    from bench.settings import Settings, make_photos
    from bench.worker import measure

    monkeypatch.setenv("IMGCLS_ENGINE", "torch")  # no ONNX export of the frozen backbone: seconds saved
    make_photos(tmp_path / "data", 22)
    s = Settings(
        data=str(tmp_path / "data"), tmp=str(tmp_path), images=22, batch_size=4, workers=0, repeats=1,
        min_seconds=0.0, min_batches=1, full_images=8, device="cpu", image_size=32,
    )  # fmt: skip
    # The baseline sides are the reference loop, which the quick bench above runs already.
    full = measure("full_finetune:efficientnet_b0", "cuda", "imgcls", s)
    head = measure("head_epoch", "cuda", "imgcls", s)
    assert full.unit == "img/s" and full.value > 0 and full.gpu_busy is None  # no CUDA events without a GPU
    assert head.unit == "s/10k img" and head.value > 0
