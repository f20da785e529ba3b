"""The bench runs end to end and writes the documented JSON; speeds are reported, never asserted."""

import json

from imgcls.bench import TARGETS, run_bench


def test_quick_bench_writes_every_measure(tmp_path):
    out = tmp_path / "bench.json"
    results = run_bench(quick=True, images=24, batch_size=8, workers=0, json_path=str(out))
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(results))
    assert {"cores", "peak_gflops", "torch"} <= set(data["machine"])
    assert [m["name"] for m in data["measures"]] == list(TARGETS)
    for m in data["measures"]:
        assert {"name", "unit", "baseline", "imgcls", "ratio", "target"} <= set(m)
        assert m["baseline"] > 0 and m["imgcls"] > 0 and m["ratio"] > 0
        assert m["baseline_peak_rss_mb"] > 0 and m["imgcls_peak_rss_mb"] > 0
