"""One object that turns decoded images into class probabilities, whatever runs the model.

Sources: a run folder (its verified ONNX export through ONNX Runtime when present, else the PyTorch
checkpoint) or an exported ``model.onnx`` with its ``model.json`` sidecar.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from imgcls.data.transforms import build_eval_transform
from imgcls.errors import ImgclsError


@dataclass
class Predictor:
    run: Callable[[torch.Tensor], torch.Tensor]  # normalised NCHW batch -> logits
    classes: list[str]
    image_size: int
    name: str
    engine: str
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.transform = build_eval_transform(self.image_size)

    def probabilities(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([self.transform(im) for im in images])
        with torch.no_grad():
            return self.run(x).float().softmax(dim=1)

    def topk(self, images: list[Image.Image], k: int = 5) -> list[list[dict]]:
        probs = self.probabilities(images)
        p, i = probs.topk(min(k, len(self.classes)), dim=1)
        return [[{"class": self.classes[int(c)], "index": int(c), "probability": float(q)} for q, c in zip(pr, ir)]
                for pr, ir in zip(p, i)]  # fmt: skip


def _from_onnx(path: Path, sidecar: Path) -> Predictor:
    from imgcls.engine.onnx_engine import OrtRunner, onnxruntime_available

    if not sidecar.is_file():
        raise ImgclsError(f"{path}: its sidecar {sidecar.name} is missing (made by imgcls export)")
    if not onnxruntime_available():
        raise ImgclsError(f"{path}: running an ONNX model needs onnxruntime (pip install onnxruntime)")
    info = json.loads(sidecar.read_text())
    return Predictor(OrtRunner(path), info["classes"], int(info["image_size"]), info.get("model", path.stem),
                     "onnxruntime", info)  # fmt: skip


def load_predictor(ref: str | Path, *, prefer_onnx: bool = True) -> Predictor:
    ref = Path(ref)
    if ref.suffix == ".onnx":
        if not ref.is_file():
            raise ImgclsError(f"not found: {ref}")
        return _from_onnx(ref, ref.with_name("model.json") if ref.name == "model.onnx" else ref.with_suffix(".json"))
    export = ref / "export" / "model.onnx"
    if prefer_onnx and export.is_file():
        from imgcls.engine.onnx_engine import onnxruntime_available

        if onnxruntime_available():
            predictor = _from_onnx(export, export.with_name("model.json"))
            summary = ref / "summary.json"
            predictor.info["summary"] = json.loads(summary.read_text()) if summary.is_file() else {}
            return predictor
    from imgcls.engine.infer import load_model_or_run

    loaded = load_model_or_run(ref)
    model = loaded.model.eval()
    info = {"summary": json.loads(loaded.paths.summary.read_text()) if loaded.paths and loaded.paths.summary.is_file()
            else {}}  # fmt: skip
    return Predictor(model, loaded.classes, loaded.image_size, loaded.name, "pytorch", info)
