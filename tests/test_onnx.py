import pytest
import torch

from imgcls.engine.onnx_engine import make_runner
from imgcls.models import create_model, get_model_info, list_models

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", [n for n in list_models() if n != "vit_b_16"])  # ViT-B/16: minutes to export
def test_onnx_runtime_and_pytorch_probabilities_agree(name, tmp_path):
    torch.manual_seed(0)
    size = max(get_model_info(name).min_image_size, 64)
    model = create_model(name, 11, image_size=size).eval()
    x = torch.randn(5, 3, size, size)
    ort = make_runner(model, size, cache_dir=tmp_path, engine="onnx")
    pt = make_runner(model, size, engine="torch")
    assert ort.engine == "onnxruntime" and pt.engine == "pytorch" and ort.file.startswith(str(tmp_path))
    diff = (ort(x).softmax(1) - pt(x).softmax(1)).abs().max()
    assert diff <= 1e-4, diff
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    make_runner(model, size, cache_dir=tmp_path, engine="onnx")  # reuses the export
    assert len(list(tmp_path.glob("*.onnx"))) == 1


def test_predict_with_onnx_and_pytorch_agree(tiny_run, demo_data):
    from imgcls.data.layouts import discover
    from imgcls.engine.predictor import load_predictor, predict_samples

    samples = discover(demo_data).test
    ort, pt = load_predictor(tiny_run, engine="onnx"), load_predictor(tiny_run, engine="torch")
    assert (ort.engine, pt.engine) == ("onnxruntime", "pytorch")
    assert pt.describe()["file"].endswith("best.ckpt")
    a, _ = predict_samples(ort, samples, workers=0)
    b, _ = predict_samples(pt, samples, workers=0)
    assert (a - b).abs().max() <= 1e-4
