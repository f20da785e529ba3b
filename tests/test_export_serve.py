import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.errors import ImgclsError
from imgcls.export import export

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
    from imgcls.predict import predict

    a = predict(exported["path"], [str(demo_data / "evaluation")], out=tmp_path / "a.csv", topk=1)
    b = predict(str(tiny_run), [str(demo_data / "evaluation")], out=tmp_path / "b.csv", topk=1, workers=0)
    assert a["predicted"] == b["predicted"] == 33
    rows_a = (tmp_path / "a.csv").read_text().splitlines()
    rows_b = (tmp_path / "b.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in rows_a] == [r.split(",")[:3] for r in rows_b]


@pytest.fixture(scope="module")
def client(exported, tiny_run):
    from fastapi.testclient import TestClient

    from imgcls.engine.predictor import load_predictor
    from imgcls.serve.app import create_app

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
    import time
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
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"imgcls serve exited: {proc.stdout.read()}")
            time.sleep(0.2)
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
    from imgcls.serve.loadtest import load_test

    r = load_test(server, demo_data / "evaluation" / "0_0.jpg", requests=120, concurrency=8)
    assert r["errors"] == 0 and r["ok"] == 120, r["error_examples"]
    assert r["p50_ms"] > 0 and r["requests_per_s"] > 0


def test_load_test_refuses_other_hosts():
    from imgcls.serve.loadtest import load_test

    with pytest.raises(ImgclsError, match="loopback"):
        load_test("http://10.0.0.1:8000", __file__, requests=1)


def test_int8_export_reports_agreement_or_refuses(tiny_run, tmp_path, monkeypatch):
    import imgcls.quantize as q

    out = tmp_path / "exp"
    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
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
