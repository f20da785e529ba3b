import pytest
import torch

from imgcls.core.errors import ImgclsError
from imgcls.models import create_model, get_head, get_model_info, list_models, parse_model_spec
from imgcls.models.profile import count_gflops, count_params

EXPECTED_PARAMS_11 = {
    "efficientnet_b0": 4_021_639,
    "vit_b_16": 85_807_115,
    "efficientnet_lite0": 3_385_099,
    "attn_cnn": 721_675,
}


def _test_size(name: str) -> int:
    info = get_model_info(name)
    return info.default_image_size if info.fixed_image_size else max(info.min_image_size, 32)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_no_nan(name):
    torch.manual_seed(0)
    size = _test_size(name)
    model = create_model(name, num_classes=5, image_size=size)
    model.train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_head_is_the_last_layer_and_small(name):
    model = create_model(name, num_classes=7)
    head = get_head(model, name)
    assert any(getattr(m, "out_features", None) == 7 for m in head.modules())
    assert count_params(head)[0] < count_params(model)[0]


@pytest.mark.parametrize("name,expected", sorted(EXPECTED_PARAMS_11.items()))
def test_param_counts_with_11_classes(name, expected):
    assert count_params(create_model(name, num_classes=11))[0] == expected


def test_gflops_match_published_efficientnet_b0():
    assert count_gflops(create_model("efficientnet_b0", 1000), 224) == pytest.approx(0.386, abs=0.002)


def test_attn_cnn_tokens_follow_image_size():
    model = create_model("attn_cnn", 11).eval()
    feats = model.features(torch.zeros(1, 3, 224, 224))
    assert feats.shape == (1, 256, 26, 26)  # 676 tokens
    for size in (32, 48, 100):
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 11)
    with pytest.raises(ImgclsError, match=">= 32"):
        create_model("attn_cnn", 11, image_size=24)


def test_attn_cnn_heads_argument():
    model = create_model("attn_cnn", 11, num_heads=4)
    assert model.attn.num_heads == 4
    with pytest.raises(ImgclsError, match="divisible"):
        create_model("attn_cnn", 11, num_heads=7)


def test_unknown_model_lists_valid_ones():
    with pytest.raises(ImgclsError) as err:
        create_model("resnet9000", 11)
    assert "attn_cnn" in str(err.value) and "efficientnet_b0" in str(err.value)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("attn_cnn", ("attn_cnn", {})),
        ("attn_cnn:num_heads=4", ("attn_cnn", {"num_heads": 4})),
        ("vit_tiny:patch_size=4,depth=2", ("vit_tiny", {"patch_size": 4, "depth": 2})),
        ("attn_cnn:dropout=0.3", ("attn_cnn", {"dropout": 0.3})),
    ],
)
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize("spec", ["attn_cnn:num_heads", ":x=1", "nope:x=1", "attn_cnn:=3"])
def test_bad_model_spec(spec):
    with pytest.raises(ImgclsError):
        parse_model_spec(spec)


def test_bad_model_kwarg_is_a_clear_error():
    with pytest.raises(ImgclsError, match="bad arguments"):
        create_model("attn_cnn", 11, colour="blue")


@pytest.mark.parametrize(
    "name,filename",
    [("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth"), ("vit_b_16", "vit_b_16-c867db91.pth")],
)
def test_missing_hub_weights_name_file_folder_and_flag(name, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("IMGCLS_OFFLINE", "1")
    with pytest.raises(ImgclsError) as err:
        create_model(name, 11, pretrained=True)
    msg = str(err.value)
    assert filename in msg and str(tmp_path / "hub" / "checkpoints") in msg and "--no-pretrained" in msg


def test_hub_weights_are_read_from_torch_home_cache(tmp_path, monkeypatch):
    """A user without internet drops the file into $TORCH_HOME/hub/checkpoints and it is used."""
    from torchvision.models import efficientnet_b0 as tv_b0

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = tv_b0(weights=None)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "efficientnet_b0_rwightman-7f5810bc.pth")
    model = create_model("efficientnet_b0", 1000, pretrained=True)
    assert torch.equal(model.features[0][0].weight, reference.features[0][0].weight)
    model11 = create_model("efficientnet_b0", 11, pretrained=True)
    assert torch.equal(model11.features[0][0].weight, reference.features[0][0].weight)
    assert model11.classifier[1].out_features == 11


def test_pretrained_without_weights_is_refused():
    with pytest.raises(ImgclsError, match="no pretrained weights"):
        create_model("attn_cnn", 11, pretrained=True)


def test_pretrained_vit_b_16_only_at_224():
    with pytest.raises(ImgclsError, match="224"):
        create_model("vit_b_16", 11, pretrained=True, image_size=160)


@pytest.mark.parametrize(
    "name, size, confidence",
    [("efficientnet_lite0", 224, 0.5), ("efficientnet_lite1", 240, 0.4), ("efficientnet_lite2", 260, 0.5)],
)
def test_efficientnet_lite_imagenet_keeps_head_and_knows_espresso(name, size, confidence):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from imgcls.data.transforms import build_eval_transform
    from imgcls.engine.predictor import imagenet_categories

    assert get_model_info(name).default_image_size == size
    model = create_model(name, num_classes=1000, pretrained=True).eval()
    assert model.classifier.out_features == 1000
    x = build_eval_transform(size)(Image.fromarray(skimage_data.coffee()))[None]
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    assert imagenet_categories()[int(probs.argmax())] == "espresso"
    assert probs.max() > confidence  # Lite1: 0.49 (runner-up "cup" 0.06)


def test_efficientnet_lite0_pretrained_new_head_keeps_backbone():
    a = create_model("efficientnet_lite0", 11, pretrained=True)
    b = create_model("efficientnet_lite0", 1000, pretrained=True)
    assert torch.equal(a.conv_stem.weight, b.conv_stem.weight)
    assert a.classifier.out_features == 11
