import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.commands.export import export
from imgcls.core.errors import ImgclsError

from conftest import wait_until

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def exported(tiny_run):
    return export(tiny_run, "onnx")


def _png(colour=(200, 20, 20), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def test_onnx_export_is_verified_and_has_a_sidecar(exported, tiny_run):
    info = json.loads((tiny_run / "export" / "model.json").read_text())
    assert exported["max_prob_diff"] <= 1e-4
    assert info["classes"][0] == "circle" and info["image_size"] == 32 and info["mean"] == [0.485, 0.456, 0.406]
    assert info["model"] == "attn_cnn" and info["file"] == "model.onnx"


def test_onnx_export_has_a_dynamic_batch_axis(exported, tiny_run):
    from imgcls.engine.onnx_engine import OrtRunner

    runner = OrtRunner(tiny_run / "export" / "model.onnx")
    assert runner.engine == "onnxruntime"
    for batch in (1, 4, 7):
        assert runner(torch.randn(batch, 3, 32, 32)).shape == (batch, 11)


def test_safetensors_export_round_trips(tiny_run, tmp_path):
    from safetensors.torch import load_file

    from imgcls.engine.predictor import load_predictor

    r = export(tiny_run, "safetensors", out=tmp_path)
    weights = load_file(r["path"])
    model = load_predictor(tiny_run, engine="torch").model
    assert set(weights) == set(model.state_dict())
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_unknown_format(tiny_run):
    with pytest.raises(ImgclsError, match="onnx, safetensors"):
        export(tiny_run, "tflite")


def test_predict_accepts_an_exported_model(exported, tiny_run, demo_data, tmp_path):
    from imgcls.commands.predict import predict

    a = predict(exported["path"], [str(demo_data / "evaluation")], out=tmp_path / "a.csv", topk=1)
    b = predict(str(tiny_run), [str(demo_data / "evaluation")], out=tmp_path / "b.csv", topk=1, workers=0)
    assert a["predicted"] == b["predicted"] == 33
    rows_a = (tmp_path / "a.csv").read_text().splitlines()
    rows_b = (tmp_path / "b.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows_a] == [r.split(",")[:3] for r in rows_b]


@pytest.fixture(scope="module")
def client(exported, tiny_run):
    from fastapi.testclient import TestClient

    from imgcls.commands.serve.app import create_app
    from imgcls.engine.predictor import load_predictor

    predictor = load_predictor(tiny_run)
    assert predictor.engine == "onnxruntime"  # the export is used when present
    return TestClient(create_app(predictor, max_upload_mb=0.05))


def test_page_health_and_model(client):
    page = client.get("/")
    assert page.status_code == 200 and "Drop an image here" in page.text and "attn_cnn" in page.text
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/model").json()
    assert info["name"] == "attn_cnn" and len(info["classes"]) == 11 and 0 <= info["best_val_acc"] <= 1


def test_predict_returns_top5_probabilities(client, tiny_run):
    r = client.post("/predict", files={"file": ("red.png", _png(), "image/png")})
    assert r.status_code == 200
    top = r.json()["top"]
    assert len(top) == 5 and top[0]["probability"] >= top[-1]["probability"]
    assert sum(t["probability"] for t in top) <= 1.0 + 1e-6
    # The same image through PyTorch gives the same answer.
    from imgcls.engine.predictor import load_predictor

    pt = load_predictor(tiny_run, engine="torch")
    assert pt.engine == "pytorch"
    expected = pt.topk([Image.open(io.BytesIO(_png())).convert("RGB")])[0]
    assert [t["class"] for t in top] == [t["class"] for t in expected]
    assert abs(top[0]["probability"] - expected[0]["probability"]) <= 1e-4


def test_predict_batch(client):
    files = [("files", (f"{i}.png", _png((i * 40, 100, 50)), "image/png")) for i in range(3)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200 and [x["filename"] for x in r.json()["results"]] == ["0.png", "1.png", "2.png"]


def test_too_large_upload_is_413(client):
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    assert len(buf.getvalue()) > 0.05 * 2**20
    r = client.post("/predict", files={"file": ("big.png", buf.getvalue(), "image/png")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("payload,status", [(b"hello, not an image", 415), (_png()[:60], 400), (b"", 400)])
def test_bad_images(client, payload, status):
    r = client.post("/predict", files={"file": ("x.png", payload, "image/png")})
    assert r.status_code == status and isinstance(r.json()["detail"], str)
    assert client.post("/predict", files={"file": ("ok.png", _png(), "image/png")}).status_code == 200


def test_decompression_bomb_is_400(client, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 40x30 PNG is "too big" now
    r = client.post("/predict", files={"file": ("bomb.png", _png(size=(100, 100)), "image/png")})
    assert r.status_code == 400 and "bomb" in r.json()["detail"]


def test_missing_field_is_422(client):
    assert client.post("/predict", files={"other": ("x.png", _png(), "image/png")}).status_code == 422
    assert client.post("/predict").status_code == 422


@pytest.fixture(scope="module")
def server(exported, tiny_run):
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgcls", "serve", str(tiny_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"imgcls serve exited: {proc.stdout.read()}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return True
        except OSError:
            return False

    wait_until(answers, timeout=60, what="imgcls serve to answer /health", every=0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_real_browser_upload_shows_the_prediction(server, demo_data, tmp_path):
    import urllib.request

    from browser import launch, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    image = demo_data / "evaluation" / "4_0.jpg"
    expected = json.loads(
        urllib.request.urlopen(
            urllib.request.Request(server + "/predict", data=_multipart_body(image), headers={"Content-Type": _CT})
        ).read()
    )["top"][0]["class"]
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto(server + "/")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#prediction", timeout=30_000)
        assert page.inner_text("#prediction") == expected
        assert page.locator(".bar").count() == 5
        assert page.eval_on_selector("#preview", "img => img.complete && img.naturalWidth > 0")
        page.screenshot(path=str(tmp_path / "serve.png"))
        browser.close()


_CT = "multipart/form-data; boundary=imgclsboundary"


def _multipart_body(path) -> bytes:
    return (
        b'--imgclsboundary\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + path.read_bytes() + b"\r\n--imgclsboundary--\r\n"
    )


def test_bounded_load_on_loopback_has_no_errors(server, demo_data):
    from imgcls.commands.serve.loadtest import load_test

    r = load_test(server, demo_data / "evaluation" / "0_0.jpg", requests=120, concurrency=8)
    assert r["errors"] == 0 and r["ok"] == 120, r["error_examples"]
    assert r["p50_ms"] > 0 and r["requests_per_s"] > 0


def test_load_test_refuses_other_hosts():
    from imgcls.commands.serve.loadtest import load_test

    with pytest.raises(ImgclsError, match="loopback"):
        load_test("http://10.0.0.1:8000", __file__, requests=1)


def test_int8_export_reports_agreement_or_refuses(tiny_run, tmp_path, monkeypatch):
    import imgcls.commands.quantize as q

    out = tmp_path / "exp"
    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(q, "MAX_DROP", 1.0)
    r = export(tiny_run, "onnx", out=out, quantize="int8")["int8"]
    assert (out / "model.int8.onnx").is_file() and 0 <= r["int8_top1_agreement"] <= 1 and r["agreement_images"] == 33
    info = json.loads((out / "model.int8.json").read_text())
    assert info["int8_top1_agreement"] == r["int8_top1_agreement"] and info["calibration_images"] > 0
    from imgcls.engine.predictor import load_predictor

    assert load_predictor(out / "model.int8.onnx").engine == "onnxruntime"
    monkeypatch.setattr(q, "MIN_AGREEMENT", 1.01)
    (out / "model.int8.onnx").unlink()
    with pytest.raises(ImgclsError, match="not written"):
        export(tiny_run, "onnx", out=out, quantize="int8")
    assert not (out / "model.int8.onnx").exists() and not list(out.glob(".*.tmp"))


def test_int8_keeps_the_classifier_tail_in_fp32(tiny_run, tmp_path, monkeypatch):
    """The last activation before pooling, the pooling and the head stay fp32 (no DequantizeLinear feeds
    them); every convolution is quantized."""
    import onnx

    import imgcls.commands.quantize as q

    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(q, "MAX_DROP", 1.0)
    run = train_tiny_lite(tmp_path)
    export(run, "onnx", out=tmp_path / "e", quantize="int8")
    graph = onnx.load(str(tmp_path / "e" / "model.int8.onnx")).graph
    made_by = {o: n for n in graph.node for o in n.output}
    tail = [n for n in graph.node if n.op_type in ("GlobalAveragePool", "Gemm")]
    assert len(tail) == 2
    for node in tail:
        assert all(made_by[i].op_type != "DequantizeLinear" for i in node.input if i in made_by), node.name
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [
        n for n in convs if made_by.get(n.input[1]) is not None and made_by[n.input[1]].op_type == "DequantizeLinear"
    ]
    assert len(quantized) == len(convs)  # every convolution's weights are int8


def train_tiny_lite(tmp_path):
    from conftest import train_tiny

    data = tmp_path / "d"
    from imgcls.data.demo import write_demo_dataset

    write_demo_dataset(data, per_class=4, size=32, seed=1)
    return train_tiny(data, tmp_path / "r", model="efficientnet_lite0", epochs=1).root


def test_int8_acceptance_counts_confident_answers_and_accuracy(tiny_run, demo_data):
    """Flipping near ties is not held against int8; flipping answers fp32 is sure of is."""
    import dataclasses

    import torch

    import imgcls.commands.quantize as q
    from imgcls.data.layouts import discover
    from imgcls.engine.predictor import load_predictor

    reference = load_predictor(tiny_run, engine="torch")
    samples = discover(demo_data).val

    def logits(top: int, gap: float):
        def run(x):
            out = torch.zeros(len(x), 11)
            out[:, top] = gap
            return out

        return dataclasses.replace(reference, run=run)

    tie_a, tie_b = logits(0, 0.01), logits(1, 0.01)  # top-2 margins far below q.MARGIN
    r = q.agreement(tie_a, tie_b, samples)
    assert r["int8_top1_agreement"] == 0.0 and r["confident_images"] == 0
    r = q.agreement(logits(0, 10.0), logits(1, 10.0), samples)  # sure, and answered differently
    assert r["confident_images"] == len(samples) and r["confident_agreement"] == 0.0
    r = q.agreement(logits(0, 10.0), logits(0, 10.0), samples)
    assert r["confident_agreement"] == 1.0 and r["fp32_accuracy"] == r["int8_accuracy"]


def test_engine_int8_only_when_asked(tiny_run, tmp_path, monkeypatch, capsys):
    import shutil

    import imgcls.commands.quantize as q
    from imgcls.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    assert main(["predict", str(run), str(image), "--engine", "int8", "--out", str(tmp_path / "a.csv")]) == 2
    assert "no int8 export" in capsys.readouterr().err
    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(q, "MAX_DROP", 1.0)
    export(run, "onnx", quantize="int8")
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "b.csv")]) == 0
    assert "model.int8.onnx" not in capsys.readouterr().out  # the default engine is not int8
    assert main(["predict", str(run), str(image), "--engine", "int8", "--out", str(tmp_path / "c.csv")]) == 0
    assert "onnxruntime: " in (out := capsys.readouterr().out) and "model.int8.onnx" in out
