"""--freeze, the error gallery and the explain pictures, on generated images."""

import csv
import json

import pytest
import torch

from imgcls.core.errors import ImgclsError

from conftest import train_tiny


def test_freeze_attention_keeps_it_fixed_and_counts_trainable(demo_data, tmp_path):
    from imgcls.engine.predictor import load_predictor
    from imgcls.models import create_model

    paths = train_tiny(demo_data, tmp_path / "f", freeze=["attn"], epochs=2)
    summary = json.loads(paths.summary.read_text())
    assert summary["frozen"] == ["attn"] and summary["trainable_params"] == 721_675 - 263_168 == 458_507
    trained = load_predictor(paths.root, engine="torch").model
    torch.manual_seed(42)  # the run's seed: the same initial weights
    init = create_model("attn_cnn", 11, image_size=32)
    for (name, a), b in zip(trained.attn.state_dict().items(), init.attn.state_dict().values()):
        assert torch.equal(a, b), f"attn.{name} changed although frozen"
    assert not torch.equal(trained.classifier[0].weight, init.classifier[0].weight)
    assert not torch.equal(trained.features[0][0].weight, init.features[0][0].weight)


def test_freeze_glob_freezes_batchnorm_statistics(demo_data, tmp_path):
    from imgcls.engine.predictor import load_predictor

    a = train_tiny(demo_data, tmp_path / "a", freeze=["features.0*"], epochs=1)
    b = train_tiny(demo_data, tmp_path / "b", freeze=["features.0*"], epochs=1, lr=1e-2)
    ma = load_predictor(a.root, engine="torch").model
    mb = load_predictor(b.root, engine="torch").model
    bn_a, bn_b = ma.features[0][1], mb.features[0][1]
    assert torch.equal(bn_a.running_mean, bn_b.running_mean) and torch.equal(bn_a.weight, bn_b.weight)
    assert torch.equal(bn_a.running_mean, torch.zeros_like(bn_a.running_mean))  # never updated
    assert not torch.equal(ma.features[1][0].weight, mb.features[1][0].weight)


def test_unknown_freeze_pattern_is_an_error(demo_data, tmp_path):
    with pytest.raises(ImgclsError, match="matches no module"):
        train_tiny(demo_data, tmp_path / "x", freeze=["attention_layer"])


def test_compare_spec_carries_the_recipe_fields(demo_data, tmp_path):
    from imgcls.commands.compare import compare
    from imgcls.core.config import resolve_config
    from imgcls.plan import parse_variant, variant_dirname

    assert parse_variant("attn_cnn:num_heads=8+freeze=attn") == ("attn_cnn:num_heads=8", {"freeze": ["attn"]})
    assert variant_dirname("attn_cnn:num_heads=8+freeze=attn") == "attn_cnn-num_heads8-freezeattn"
    with pytest.raises(ImgclsError, match="recipe field"):
        parse_variant("attn_cnn+colour=blue")
    cfg = resolve_config(
        None, dict(data=str(demo_data), epochs=1, image_size=32, batch_size=16, workers=0, augment="light")
    )
    out = tmp_path / "c"
    compare(cfg, ["attn_cnn:num_heads=4", "attn_cnn:num_heads=4+freeze=attn"], out, progress=False)
    frozen = json.loads((out / "attn_cnn-num_heads4-freezeattn" / "summary.json").read_text())
    plain = json.loads((out / "attn_cnn-num_heads4" / "summary.json").read_text())
    assert plain["trainable_params"] - frozen["trainable_params"] == 263_168


def test_evaluate_writes_the_error_gallery(tiny_run):
    from imgcls.commands.evaluate import evaluate

    r = evaluate(tiny_run, workers=0, gallery=5)
    folder = tiny_run / "eval" / "evaluation"
    with open(folder / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    with open(folder / "errors.csv") as fh:
        errors = list(csv.DictReader(fh))
    wrong = [p for p in preds if p["true"] != p["predicted"]]
    assert len(preds) == r["images"] == 33
    assert len(errors) == min(5, len(wrong))
    probs = [float(e["probability"]) for e in errors]
    assert probs == sorted(probs, reverse=True)
    assert max(float(p["probability"]) for p in wrong) == pytest.approx(probs[0], abs=1e-4)
    assert (folder / "errors.png").stat().st_size > 5_000


def test_gallery_cells_are_filled_and_captioned_whatever_the_photo_size(tmp_path):
    """32 px photos are enlarged to the cell (Pillow's thumbnail() never enlarges), large ones reduced."""
    import numpy as np
    from PIL import Image

    from imgcls.report.gallery import write_error_gallery

    rows = []
    for i, size in enumerate((32, 900)):
        Image.new("RGB", (size, size), (220, 20, 20)).save(tmp_path / f"{i}.png")
        rows.append(
            {"path": str(tmp_path / f"{i}.png"), "true": "cat", "predicted": "dog", "probability": 0.9 - i / 10}
        )
    write_error_gallery(tmp_path, rows, title="validation")
    grid = np.asarray(Image.open(tmp_path / "errors.png").convert("RGB")).astype(int)
    red = (grid[..., 0] > 180) & (grid[..., 1] < 80) & (grid[..., 2] < 80)
    half = grid.shape[1] // 4  # one cell of the four across
    for cell in (red[:, :half], red[:, half : 2 * half]):
        assert cell.sum() > 150 * 150, cell.sum()  # the 160 px square, not a 32 px stamp
    dark = (grid.sum(axis=2) < 200)[:, :half]
    assert dark[200:, :].sum() > 50  # caption text under the photo


def test_evaluate_on_other_data_goes_to_its_own_folder(tiny_run, demo_data, tmp_path):
    import shutil

    from imgcls.commands.evaluate import evaluate

    one = tmp_path / "shapes"
    for path in sorted((demo_data / "evaluation").glob("*.jpg")):
        cls = json.loads((tiny_run / "classes.json").read_text())[int(path.stem.split("_")[0])]
        (one / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, one / cls / path.name)
    before = (
        (tiny_run / "eval" / "evaluation" / "metrics.json").read_bytes()
        if (tiny_run / "eval" / "evaluation" / "metrics.json").is_file()
        else None
    )
    r = evaluate(tiny_run, data=str(one), workers=0)
    assert r["split"] == "all" and r["images"] == 33
    assert r["out"] == str(tiny_run / "eval" / "on-shapes" / "all")
    if before is not None:
        assert (tiny_run / "eval" / "evaluation" / "metrics.json").read_bytes() == before


def test_explain_writes_pictures_for_attention_and_grad_cam(demo_data, tmp_path, tiny_run):
    from imgcls.commands.explain import explain, grad_cam
    from imgcls.models import create_model

    image = str(demo_data / "evaluation" / "0_0.jpg")
    written = explain(tiny_run, [image], out=tmp_path / "x")
    assert written[0].stat().st_size > 5_000
    for name, size in (("efficientnet_lite0", 64), ("vit_tiny", 64)):
        model = create_model(name, 11, image_size=size).eval()
        heat, logits = grad_cam(model, torch.randn(2, 3, size, size))
        assert heat.shape[0] == 2 and heat.dim() == 3 and min(heat.shape[1:]) > 1 and logits.shape == (2, 11)
        assert torch.isfinite(heat).all()
