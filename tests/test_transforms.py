import pytest
import torch
from PIL import Image

from imgcls.core.errors import ImgclsError
from imgcls.data.transforms import build_eval_transform, build_train_transform, eval_resize


@pytest.fixture
def photo():
    torch.manual_seed(0)
    return Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy())


def test_eval_resize_keeps_the_reference_ratio():
    assert eval_resize(224) == 256
    assert eval_resize(112) == 128
    assert eval_resize(32) == 37


def test_reference_chain_matches_the_recipe():
    exact = build_train_transform(224, "reference-torchvision")
    names = [type(t).__name__ for t in exact.transforms]
    assert names == [
        "RandomRotation",
        "ColorJitter",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ToTensor",
        "Normalize",
    ]
    rot, jitter, crop = exact.transforms[:3]
    assert rot.degrees == [-40.0, 40.0]
    assert jitter.brightness == (0.8, 1.2) and jitter.hue == (-0.1, 0.1)
    assert crop.size == (224, 224)
    fast = build_train_transform(224)  # the default: the same chain as one warp (tests/test_fast_augment.py)
    assert fast.size == 224 and fast.degrees == 40.0
    assert fast.jitter.brightness == (0.8, 1.2) and fast.jitter.hue == (-0.1, 0.1)


@pytest.mark.parametrize("augment", ["reference", "reference-torchvision", "light", "none"])
@pytest.mark.parametrize("size", [32, 96])
def test_train_chains_give_normalised_tensors(photo, augment, size, tmp_path):
    tf = build_train_transform(size, augment)
    if getattr(tf, "from_path", False):
        photo.save(tmp_path / "p.png")
        x = tf(str(tmp_path / "p.png"))
    else:
        x = tf(photo)
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert -3 < float(x.mean()) < 3


def test_eval_transform_is_deterministic_and_none_equals_eval(photo):
    a = build_eval_transform(64)(photo)
    assert torch.equal(a, build_eval_transform(64)(photo))
    assert torch.equal(a, build_train_transform(64, "none")(photo))


def test_reference_augmentation_is_random(photo):
    torch.manual_seed(1)
    tf = build_train_transform(64, "reference-torchvision")
    assert not torch.equal(tf(photo), tf(photo))


def test_unknown_augment():
    with pytest.raises(ImgclsError, match="reference, reference-torchvision, light, none"):
        build_train_transform(64, "heavy")
