"""serve under hostile input: pixel caps, Host header, stalled uploads, bad k, untrusted names."""

import asyncio
import io
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.engine.predictor import Predictor

from conftest import wait_until


class _Runner:
    engine, file = "pytorch", None

    def __call__(self, x):
        return torch.zeros(len(x), 3)


def _client(**kw):
    from fastapi.testclient import TestClient

    from imgcls.commands.serve.app import create_app

    return TestClient(create_app(Predictor(_Runner(), ["a", "b", "c"], 32, "<script>alert(1)</script>"), **kw))


def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def test_a_huge_16_bit_png_is_refused_from_its_header_and_memory_stays_flat():
    big = _png(np.zeros((9400, 9400), dtype=np.uint16))
    assert len(big) < 400_000
    client = _client()
    rss = []
    for i in range(500):
        r = client.post("/predict", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "too many pixels" in r.json()["detail"]
        if i in (20, 499):
            rss.append(int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20)
    assert rss[1] - rss[0] < 100, rss  # MB: nothing decoded, nothing kept
    assert (
        client.post(
            "/predict", files={"file": ("ok.png", _png(np.zeros((40, 30, 3), np.uint8)), "image/png")}
        ).status_code
        == 200
    )


def test_host_header_is_checked_on_loopback():
    from imgcls.commands.serve.guards import LOOPBACK_HOSTS

    client = _client(allowed_hosts=LOOPBACK_HOSTS)
    assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
    r = client.get("/health", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and "loopback" in r.json()["detail"]


def test_k_out_of_range_is_422_and_the_model_name_is_escaped():
    client = _client()
    data = _png(np.zeros((40, 30, 3), np.uint8))
    for k in (-1, 0, 4):
        assert client.post(f"/predict?k={k}", files={"file": ("x.png", data, "image/png")}).status_code == 422
    page = client.get("/").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_a_stalled_upload_gets_408():
    from imgcls.commands.serve.guards import UploadTimeout

    async def app(scope, receive, send):
        await receive()  # the body never comes
        raise AssertionError("unreachable")

    sent = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(UploadTimeout(app, 0.2)({"type": "http"}, receive, send))
    assert sent[0]["status"] == 408 and "sent nothing" in json.loads(sent[1]["body"])["detail"]


def test_serve_refuses_bad_limits(capsys):
    from imgcls.cli import main

    assert main(["serve", "efficientnet_lite0", "--max-pixels", "0"]) == 2
    assert "--max-pixels must be at least 1, got 0" in capsys.readouterr().err
    assert main(["serve", "efficientnet_lite0", "--port", "70000"]) == 2
    assert "--port must be between 1 and 65535, got 70000" in capsys.readouterr().err


@pytest.mark.parametrize("n", [3])
def test_epoch_axes_have_whole_ticks_and_no_eval_mode_warning(demo_data, tmp_path, recwarn, n):
    from imgcls.report import figures
    from imgcls.report.collect import collect

    from conftest import train_tiny

    train_tiny(demo_data, tmp_path / "c" / "r", model="efficientnet_lite0", epochs=n, augment="none")
    assert not [w for w in recwarn if "eval mode" in str(w.message)]
    import matplotlib.pyplot as plt

    captured = {}
    orig = figures._save

    def keep(fig, path):
        captured["ticks"] = [t for ax in fig.axes for t in ax.get_xticks()]
        return orig(fig, path)

    figures._save = keep
    try:
        figures.curves(collect(tmp_path / "c"), tmp_path / "curves.png")
    finally:
        figures._save = orig
        plt.close("all")
    assert captured["ticks"] and all(float(t).is_integer() for t in captured["ticks"])


def _real_server(app):
    """The app under uvicorn on a free loopback port, in a thread; returns (port, stop)."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=20, what="the server to start")

    def stop():
        server.should_exit = True
        thread.join(5)

    return port, stop


@pytest.mark.parametrize("trickle", [False, True])
def test_stalled_and_trickling_uploads_get_408_from_a_real_server(tiny_run, trickle):
    import socket

    from imgcls.commands.serve.app import create_app
    from imgcls.engine.predictor import load_predictor

    app = create_app(load_predictor(tiny_run), upload_timeout=0.5)  # total body deadline: 4 x 0.5 s
    port, stop = _real_server(app)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            head = (
                "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                "Content-Length: 100000\r\n\r\n--x\r\n"
            )
            conn.sendall(head.encode())
            t0 = time.perf_counter()
            reply = b""
            conn.settimeout(0.3 if trickle else 10)
            while b"\r\n\r\n" not in reply and time.perf_counter() - t0 < 8:
                if trickle:
                    try:
                        conn.sendall(b"a")  # one byte every 0.3 s: never idle for the 0.5 s timeout
                    except OSError:
                        pass
                try:
                    reply += conn.recv(4096)
                except TimeoutError:
                    continue
            elapsed = time.perf_counter() - t0
            conn.settimeout(5)
            while b"}" not in reply.partition(b"\r\n\r\n")[2]:  # the JSON body may come in its own packet
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert (1.5 < elapsed < 4) if trickle else (elapsed < 1.5)
        assert (b"not complete" if trickle else b"sent nothing") in reply
    finally:
        stop()
