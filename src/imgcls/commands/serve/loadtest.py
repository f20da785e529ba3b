"""A bounded load test for ``imgcls serve`` on loopback: N requests, C at a time, then it stops."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

from imgcls.core.errors import ImgclsError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def load_test(url: str, image: str | Path, *, requests: int = 500, concurrency: int = 8, timeout: float = 30.0) -> dict:
    if not Path(image).is_file():
        raise ImgclsError(f"not found: {image}")
    parsed = urlparse(url)
    if parsed.hostname not in LOOPBACK:
        raise ImgclsError(f"load tests only target this machine (loopback), not {parsed.hostname}")
    body, ctype = _multipart(Path(image))
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=timeout)
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": ctype})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                detail = f"HTTP {resp.status}"
            except OSError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=timeout)
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - t0 if ok else detail)
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    pct = lambda q: ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))] if ms else float("nan")  # noqa: E731
    return {
        "requests": requests,
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else None,
        "requests_per_s": round(len(ms) / wall, 1),
        "wall_s": round(wall, 2),
    }
