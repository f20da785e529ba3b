"""``imgcls serve``: a FastAPI app with a drag-and-drop page and a JSON API over one loaded model.

Uploads are only ever decoded by Pillow (never unpickled); size is capped before the body is read
when the client declares it, and again while reading. Decoding and the model run in worker threads,
at most ``max_concurrency`` at a time, so the event loop (and ``/health``) never waits behind them.
"""

from __future__ import annotations

import html
import io
import logging
from pathlib import Path

import anyio
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from imgcls.commands.serve.guards import LOOPBACK_HOSTS, HostGuard, UploadTimeout
from imgcls.core.errors import BadImageError
from imgcls.data.decode import NOT_AN_IMAGE, TOO_MANY_PIXELS, load_rgb
from imgcls.engine.predictor import Predictor, load_predictor

log = logging.getLogger(__name__)
PAGE = (Path(__file__).with_name("page.html")).read_text()
MAX_BATCH_FILES = 32
# A classifier that resizes to 224 px gains nothing from more; a 24-megapixel RGB decode is ~70 MB.
DEFAULT_MAX_PIXELS = 24_000_000


def _decode(data: bytes, name: str, max_pixels: int):
    try:
        return load_rgb(io.BytesIO(data), max_pixels=max_pixels)
    except BadImageError as exc:
        # 415: not an image format we read; 413: more pixels than allowed; 400: corrupt, truncated or a bomb.
        status = 415 if exc.reason == NOT_AN_IMAGE else 413 if exc.reason.startswith(TOO_MANY_PIXELS) else 400
        raise HTTPException(status, f"{name or 'upload'}: {exc.reason}") from None


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{upload.filename or 'upload'}: larger than the {limit // 2**20} MB limit")
    if not data:
        raise HTTPException(400, f"{upload.filename or 'upload'}: empty file")
    return data


def create_app(
    predictor: Predictor,
    *,
    max_upload_mb: float = 10.0,
    max_concurrency: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allowed_hosts: set[str] | None = None,
    upload_timeout: float = 30.0,
) -> FastAPI:
    """``allowed_hosts``: Host header names to answer (None: any); ``upload_timeout``: seconds a request
    body may send nothing before it is answered 408."""
    limit = int(max_upload_mb * 2**20)
    app = FastAPI(title="imgcls", version="1", docs_url="/docs")
    app.state.predictor = predictor
    # The model uses every core already; more parallel inferences only add memory and latency.
    limiter = anyio.CapacityLimiter(max_concurrency)
    max_k = len(predictor.classes)

    def infer(blobs: list[tuple[bytes, str]], k: int) -> list[dict]:
        """Per image: ``top`` (the k most probable classes), or for a multi-label model ``labels`` (those
        above their thresholds) and ``scores`` (every label: probability, threshold, predicted)."""
        images = [_decode(data, name, max_pixels) for data, name in blobs]
        if predictor.multilabel:
            return [
                {"labels": [r["class"] for r in rows if r["predicted"]], "scores": rows}
                for rows in predictor.labels(images)
            ]
        return [{"top": top} for top in predictor.topk(images, k)]

    async def run_infer(blobs: list[tuple[bytes, str]], k: int) -> list[dict]:
        return await anyio.to_thread.run_sync(infer, blobs, k, limiter=limiter)

    @app.middleware("http")
    async def reject_large_bodies(request: Request, call_next):
        declared = request.headers.get("content-length")
        # The whole multipart body may carry several files (batch), each up to the limit.
        cap = limit * (MAX_BATCH_FILES if request.url.path == "/predict/batch" else 1) + 64 * 1024
        if declared and declared.isdigit() and int(declared) > cap:
            return JSONResponse({"detail": f"request larger than the {max_upload_mb:g} MB upload limit"}, 413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("{{MODEL}}", html.escape(predictor.name)).replace("{{MAX_MB}}", f"{max_upload_mb:g}")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict:
        summary = predictor.info.get("summary") or {}
        metric = "val_mAP" if predictor.multilabel else "val_acc"
        best = summary.get(f"best_{metric}", predictor.info.get(f"best_{metric}"))
        file = predictor.run.file or ""
        return {
            "name": predictor.name,
            "engine": predictor.engine,
            "file": file,
            "int8": Path(file).name.endswith(".int8.onnx"),
            "task": predictor.task,
            "classes": predictor.classes,
            "thresholds": predictor.thresholds,
            "image_size": predictor.image_size,
            "best_val_acc": summary.get("best_val_acc", predictor.info.get("best_val_acc")),
            "best_val_score": best,
            "max_upload_mb": max_upload_mb,
        }

    @app.post("/predict")
    async def predict(file: UploadFile = File(...), k: int = Query(5, ge=1, le=max_k)) -> dict:
        answer = await run_infer([(await _read_limited(file, limit), file.filename)], k)
        return {"filename": file.filename, **answer[0]}

    @app.post("/predict/batch")
    async def predict_batch(files: list[UploadFile] = File(...), k: int = Query(5, ge=1, le=max_k)) -> dict:
        if len(files) > MAX_BATCH_FILES:
            raise HTTPException(413, f"at most {MAX_BATCH_FILES} files per batch")
        blobs = [(await _read_limited(f, limit), f.filename) for f in files]
        answers = await run_infer(blobs, k)
        return {"results": [{"filename": f.filename, **a} for f, a in zip(files, answers)]}

    app.add_middleware(UploadTimeout, seconds=upload_timeout)
    app.add_middleware(HostGuard, allowed=allowed_hosts)
    return app


def serve(
    ref: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_mb: float = 10.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    upload_timeout: float = 30.0,
    engine: str | None = None,
) -> None:
    import uvicorn

    predictor = load_predictor(ref, engine=engine)
    allowed = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else None
    app = create_app(
        predictor,
        max_upload_mb=max_upload_mb,
        max_pixels=max_pixels,
        allowed_hosts=allowed,
        upload_timeout=upload_timeout,
    )
    print(
        f"serving {predictor.name} ({len(predictor.classes)} classes, {predictor.engine}: {predictor.run.file}) "
        f"on http://{host}:{port}/"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
