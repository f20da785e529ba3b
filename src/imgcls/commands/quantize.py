"""``imgcls export --quantize int8``: ONNX Runtime static int8 quantization, calibrated on training images
and accepted only when it keeps the model's answers on the validation split.

Static QDQ quantization (per-channel weights, activations calibrated by min/max on a few hundred
training images through the eval transform) lets ONNX Runtime run int8 convolutions/matmuls on CPUs
with VNNI/AVX-512. What stays in fp32: the classifier tail — the last activation before global pooling,
the pooling and the head. ORT's per-layer error report (``qdq_loss_debug``) on a food5 EfficientNet-Lite0
showed that activation quantized at 0.1 dB SQNR (a ReLU6 map of 1,280 channels whose values are
mostly tiny, so one 8-bit step swallows them), and excluding it raised agreement from 96.5% to 97.1% at
the same speed. What remains is near ties: the images int8 answers differently are those whose fp32
top-2 probabilities are within a few hundredths (measured in docs/BENCHMARKS.md).

Acceptance therefore asks for what a user can rely on: the same answer on at least 99% of the
validation images the fp32 model is sure of (top-2 margin at least ``MARGIN``; multi-label: every
probability at least ``MARGIN`` from its threshold), and validation accuracy within ``MAX_DROP``.
Both numbers, and the raw agreement on every image, are recorded. The fp32 export stays the default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgcls.core.errors import ImgclsError
from imgcls.core.files import atomic_path

MIN_AGREEMENT = 0.99  # on the validation images fp32 is sure of
MARGIN = 0.1  # fp32's top-2 probability gap (multi-label: distance from the threshold) that counts as sure
MAX_DROP = 0.01  # validation accuracy (multi-label: exact match) int8 may lose


def calibration_batches(samples, transform, batch_size: int = 16):
    from imgcls.data.dataset import ImageDataset
    from imgcls.data.loader import make_loader

    loader = make_loader(ImageDataset(samples, transform), batch_size=batch_size, workers=0, shuffle=False)
    for batch in loader:
        if batch is not None:
            yield batch[0]


def fp32_tail(model_path: Path) -> list[str]:
    """The nodes kept in fp32: a global pooling, everything after it and the node that feeds it (for a
    CNN: the last activation, the pooling, the head); without a pooling, the final Gemm/MatMul."""
    import onnx

    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)
    pools = [i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "GlobalMaxPool")]
    if not pools:
        return [n.name for n in nodes[-3:] if n.op_type in ("Gemm", "MatMul")]
    start = pools[-1]
    producers = {out: n.name for n in nodes for out in n.output}
    keep = {producers.get(nodes[start].input[0])} - {None}
    return sorted(keep | {n.name for n in nodes[start:] if n.op_type != "Constant"})


def quantize_static_int8(fp32: Path, out: Path, batches) -> None:
    """Static QDQ int8 of ``fp32`` into ``out``, activations calibrated on ``batches`` (float tensors)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"image": x.numpy().astype(np.float32)}

    from imgcls.core.files import temporary_name

    prepared = temporary_name(out, "pre")
    try:
        # ORT's recommended first step (graph optimisation; its symbolic shape inference is skipped, it
        # fails on attn_cnn's attention): EfficientNet-B0 int8 went from 146 to 192 img/s on 2 cores
        # (fp32: 135), more of its ops being quantizable once fused.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=fp32_tail(prepared),
        )
    finally:
        prepared.unlink(missing_ok=True)


def agreement(reference, candidate, samples) -> dict:
    """How far two predictors give the same answers on ``samples`` (the same class; multi-label: the same
    set of labels): on every image, on the images the reference is sure of, and each one's accuracy."""
    import torch

    from imgcls.engine.predictor import predict_samples

    ref, kept = predict_samples(reference, samples, workers=0, batch_size=32)
    got, _ = predict_samples(candidate, [samples[i] for i in kept], workers=0, batch_size=32)
    labels = [samples[i].label for i in kept]
    if reference.multilabel:
        same = (reference.decide(ref) == candidate.decide(got)).all(1)
        thresholds = torch.tensor(reference.thresholds)
        sure = ((ref - thresholds).abs() >= MARGIN).all(1)
        truth = torch.zeros_like(ref, dtype=torch.bool)
        for r, label in enumerate(labels):
            truth[r, list(label) if isinstance(label, tuple) else []] = True
        correct = lambda p, pred: (pred.decide(p) == truth).all(1)  # noqa: E731 - exact match
    else:
        same = ref.argmax(1) == got.argmax(1)
        top2 = ref.topk(min(2, ref.shape[1]), dim=1).values
        sure = (top2[:, 0] - top2[:, -1]) >= MARGIN
        truth = torch.tensor(labels)
        correct = lambda p, pred: p.argmax(1) == truth  # noqa: E731
    total = len(kept)
    return {
        "int8_top1_agreement": int(same.sum()) / max(1, total),
        "agreement_images": total,
        "confident_agreement": int((same & sure).sum()) / max(1, int(sure.sum())),
        "confident_images": int(sure.sum()),
        "fp32_accuracy": float(correct(ref, reference).float().mean()) if total else 0.0,
        "int8_accuracy": float(correct(got, candidate).float().mean()) if total else 0.0,
    }


def quantize_int8(fp32, out: Path, *, calibration, validation, calib_images: int = 256) -> dict:
    """Write ``out`` (int8) from the fp32 predictor's file; returns the agreement numbers, or raises
    (removing ``out``) when the answers change too much (see the module docstring)."""
    from imgcls.engine.predictor import onnx_predictor

    with atomic_path(out) as tmp:  # a refused or interrupted quantization leaves nothing behind
        quantize_static_int8(Path(fp32.run.file), tmp, calibration_batches(calibration[:calib_images], fp32.transform))
        r = agreement(fp32, onnx_predictor(tmp, fp32.info), validation)
        drop = r["fp32_accuracy"] - r["int8_accuracy"]
        if r["confident_agreement"] < MIN_AGREEMENT or drop > MAX_DROP:
            raise ImgclsError(
                f"int8 model agrees with fp32 on {r['confident_agreement']:.2%} of the {r['confident_images']} "
                f"validation images fp32 is sure of ({r['int8_top1_agreement']:.2%} of all {r['agreement_images']}), "
                f"accuracy {r['fp32_accuracy']:.4f} -> {r['int8_accuracy']:.4f} (needs >= {MIN_AGREEMENT:.0%} "
                f"and a drop of at most {MAX_DROP:.0%}): not written; keep the fp32 export"
            )
    return {
        **r,
        "rule": f"same answer on >= {MIN_AGREEMENT:.0%} of validation images with fp32 margin >= {MARGIN}, "
        f"accuracy drop <= {MAX_DROP:.0%}",
        "calibration_images": min(calib_images, len(calibration)),
        "int8_size_mb": out.stat().st_size / 2**20,
    }
