"""``imgcls.load`` and the ``Model`` it returns (``predict`` on paths, PIL images or arrays; ``embed``), and
the file-writing commands on a model: ``predict`` to a CSV, ``export``, ``explain``, ``serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from imgcls.api import display
from imgcls.api.common import checked, quiet_libraries
from imgcls.commands.options import ENGINES, ExplainOptions, ExportOptions, PredictOptions, ServeOptions
from imgcls.core.errors import BadImageError, ImgclsError
from imgcls.core.options import coerce


def load(ref: str | Path, *, engine: str | None = None) -> Model:
    """A trained model from a run folder, an exported ``.onnx``/``.safetensors`` (with its sidecar), or a
    registered name with ImageNet weights (``"efficientnet_lite0"``): the one loader ``evaluate``,
    ``predict`` and ``serve`` use."""
    from imgcls.engine.predictor import load_predictor

    quiet_libraries()
    if engine is not None and engine not in ENGINES:
        raise ImgclsError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    return Model(load_predictor(ref, engine=engine), ref)


class Predictions(pd.DataFrame):
    """One row per image (a DataFrame); in a notebook each row shows its thumbnail. Operations on it give
    plain DataFrames."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def _repr_html_(self) -> str:
        thumbs = self.attrs.get("thumbnails")
        if not thumbs or len(thumbs) != len(self) or len(self) > 64:
            return super()._repr_html_()
        import html

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["", *self.columns])
        rows = []
        for thumb, (_, row) in zip(thumbs, self.iterrows()):
            cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row)
            rows.append(f"<tr><td><img src='{thumb}'/></td>{cells}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


class Model:
    """A loaded model: ``classes``, ``task``, ``name``, ``engine``; ``predict(images)`` and ``embed(images)``.
    Images are file paths, folders (every image inside), PIL images or numpy arrays (H x W x 3 or
    H x W; uint8, or floats in [0, 1])."""

    def __init__(self, predictor, ref):
        self.predictor = predictor
        self.ref = ref
        self._backbone = None

    def __repr__(self) -> str:
        p = self.predictor
        return f"Model({p.name!r}, {len(p.classes)} classes, {p.task}, {p.engine}: {p.run.file})"

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)

    @property
    def task(self) -> str:
        return self.predictor.task

    @property
    def name(self) -> str:
        return self.predictor.name

    @property
    def engine(self) -> dict:
        """Which engine runs the model, and from which file."""
        return self.predictor.describe()

    def predict(self, images, *, topk: int = 1, batch_size: int = 64) -> Predictions:
        """Single-label: ``image``, ``class``, ``probability`` and, with ``topk`` > 1, ``top2_class``,
        ``top2_probability``...; multi-label: ``image``, ``labels`` (those at or above their thresholds) and
        one probability column per label."""
        import torch

        p = self.predictor
        if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= len(p.classes):
            raise ImgclsError(f"topk must be between 1 and {len(p.classes)}, got {topk!r}")
        batch_size = coerce(PredictOptions, "batch_size", batch_size)
        ids, pictures = _images(images)
        probs = []
        for start in range(0, len(pictures), batch_size):
            probs.append(p.probabilities(pictures[start : start + batch_size]))
        probs = torch.cat(probs)
        if p.multilabel:
            decided = p.decide(probs)
            rows = [
                {
                    "image": i,
                    "labels": [c for c, d in zip(p.classes, decided[r]) if d],
                    **{c: float(probs[r, j]) for j, c in enumerate(p.classes)},
                }
                for r, i in enumerate(ids)
            ]
        else:
            top_p, top_i = probs.topk(topk, dim=1)
            rows = []
            for r, i in enumerate(ids):
                row = {"image": i, "class": p.classes[int(top_i[r, 0])], "probability": float(top_p[r, 0])}
                for j in range(1, topk):
                    row[f"top{j + 1}_class"] = p.classes[int(top_i[r, j])]
                    row[f"top{j + 1}_probability"] = float(top_p[r, j])
                rows.append(row)
        out = Predictions(rows)
        out.attrs["thumbnails"] = [display.thumbnail(im) for im in pictures] if len(pictures) <= 64 else []
        return out

    def embed(self, images, *, batch_size: int = 64):
        """The features the classifier's head reads (numpy, one row per image): for similarity search,
        clustering or a model of your own. Needs the PyTorch weights (a run folder, a ``.safetensors``
        export or a registered name), not an ONNX file alone."""
        import numpy as np
        import torch

        if self._backbone is None:
            self._backbone = self._make_backbone()
        _, pictures = _images(images)
        out = []
        transform = self.predictor.transform
        for start in range(0, len(pictures), batch_size):
            x = torch.stack([transform(im) for im in pictures[start : start + batch_size]])
            out.append(self._backbone.run(x).float().reshape(len(x), -1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def _make_backbone(self):
        from imgcls.engine.predictor import EXPORT_SUFFIXES, load_predictor, predictor_for_module
        from imgcls.models.blocks import split

        model = self.predictor.model
        if model is None:
            if Path(str(self.ref)).suffix == ".onnx":
                raise ImgclsError(
                    f"{self.ref}: embed needs the PyTorch weights (the run folder or a .safetensors export), "
                    "not an ONNX file alone"
                )
            if Path(str(self.ref)).suffix not in EXPORT_SUFFIXES:
                model = load_predictor(self.ref, engine="torch").model
        prefix = split(model.eval(), 0)[0]
        return predictor_for_module(prefix, self.predictor.image_size, name=f"{self.name} (features)")


def _images(images) -> tuple[list[str], list]:
    """(ids, PIL RGB images) of whatever ``predict`` was given."""
    import numpy as np
    from PIL import Image

    from imgcls.data.decode import load_rgb
    from imgcls.data.layouts import samples_with_ids

    items = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ImgclsError("no images given")
    ids, pictures = [], []
    for k, item in enumerate(items):
        if isinstance(item, (str, Path)):
            for sample, name in samples_with_ids([item]):
                try:
                    pictures.append(load_rgb(sample.path))
                except BadImageError as exc:
                    raise ImgclsError(str(exc)) from None
                ids.append(name if Path(str(item)).is_dir() else str(item))
        elif isinstance(item, Image.Image):
            pictures.append(item.convert("RGB"))
            ids.append(getattr(item, "filename", "") or f"image {k}")
        elif isinstance(item, np.ndarray):
            pictures.append(_from_array(item, k))
            ids.append(f"array {k}")
        else:
            raise ImgclsError(f"image {k}: expected a path, a PIL image or a numpy array, got {type(item).__name__}")
    return ids, pictures


def _from_array(a, k: int):
    import numpy as np
    from PIL import Image

    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # CHW, as torchvision gives
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ImgclsError(f"array {k}: expected H x W x 3 (or H x W) pixels, got shape {a.shape}")
    if a.dtype != np.uint8:
        if not np.isfinite(a).all():
            raise ImgclsError(f"array {k}: holds NaN or infinite values")
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.max() <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def predict(ref: str | Path, inputs, **options: Any) -> Predictions:
    """``imgcls predict``: a predictions CSV (``out``, default preds.csv) for files and folders, also
    returned as a DataFrame. ``submission``: a sample submission to fill in."""
    from imgcls.commands.predict import predict as run_predict

    quiet_libraries()
    inputs = [str(i) for i in inputs] if isinstance(inputs, (list, tuple)) else [str(inputs)]
    opts = checked(PredictOptions, dict(run=str(ref), inputs=inputs, **options), "imgcls.predict")
    r = run_predict(
        opts.run,
        opts.inputs,
        out=opts.out,
        topk=opts.topk,
        batch_size=opts.batch_size,
        workers=opts.workers,
        tta=opts.tta,
        submission=opts.submission,
        engine=opts.engine,
        force=opts.force,
    )
    from imgcls.core.tables import read_table

    table = read_table(r["out"], ours=True, exact=True, empty_ok=True)
    out = Predictions(table.rows, columns=table.header)
    out.attrs.update(result=r)
    return out


def export(run: str | Path, **options: Any) -> dict:
    """``imgcls export``: ONNX (verified against PyTorch; ``quantize="int8"`` adds the int8 model) or
    safetensors, each with its sidecar. Returns the paths and the verification numbers."""
    from imgcls.commands.export import export as run_export

    quiet_libraries()
    opts = checked(ExportOptions, dict(run=str(run), **options), "imgcls.export")
    return run_export(opts.run, opts.format, out=opts.out, quantize=opts.quantize, force=opts.force)


def explain(run: str | Path, images, **options: Any) -> list[Path]:
    """``imgcls explain``: one overlay PNG per image (attention for attn_cnn, else Grad-CAM)."""
    from imgcls.commands.explain import explain as run_explain

    quiet_libraries()
    images = [str(i) for i in images] if isinstance(images, (list, tuple)) else [str(images)]
    opts = checked(ExplainOptions, dict(run=str(run), images=images, **options), "imgcls.explain")
    return run_explain(opts.run, opts.images, out=opts.out)


def serve(run: str | Path, **options: Any) -> None:
    """``imgcls serve``: the page and JSON API for a model, until interrupted."""
    from imgcls.commands.serve.app import serve as run_serve

    quiet_libraries()
    opts = checked(ServeOptions, dict(run=str(run), **options), "imgcls.serve")
    run_serve(
        opts.run,
        host=opts.host,
        port=opts.port,
        max_upload_mb=opts.max_upload_mb,
        max_pixels=opts.max_pixels,
        upload_timeout=opts.upload_timeout,
        engine=opts.engine,
    )
