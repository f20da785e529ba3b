"""The reference transforms, scaled to any image size, plus the milder 'light' chain."""

from __future__ import annotations

from torchvision import transforms as T

from imgcls.core.errors import ImgclsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTS = ("reference", "reference-torchvision", "light", "none")


def eval_resize(size: int) -> int:
    """Resize(256)+CenterCrop(224) at 224 px; the same ratio at other sizes."""
    return round(size * 256 / 224)


def _to_normalized_tensor() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def build_eval_transform(size: int, crop: bool = True) -> T.Compose:
    """Resize(256)+CenterCrop(224) at 224 px; without ``crop`` the whole image is resized to size x size
    (multi-label: a label in a corner must not be cropped away)."""
    if not crop:
        return T.Compose([T.Resize((size, size)), *_to_normalized_tensor()])
    return T.Compose([T.Resize(eval_resize(size)), T.CenterCrop(size), *_to_normalized_tensor()])


def build_train_transform(size: int, augment: str = "reference"):
    """``reference``: the recipe's chain as one fast warp (see fast_augment.py); ``reference-torchvision``:
    the same chain op by op in torchvision, exactly as the original notebooks ran it."""
    if augment == "reference":
        from imgcls.data.fast_augment import FastTrainAugment

        return FastTrainAugment(size, normalize=T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if augment == "reference-torchvision":
        return T.Compose(
            [
                T.RandomRotation(40),
                T.ColorJitter(0.2, 0.2, 0.2, 0.1),
                T.RandomResizedCrop(size),
                T.RandomHorizontalFlip(),
                *_to_normalized_tensor(),
            ]
        )
    if augment == "light":
        # No flips and no aggressive crops: safe for digits, text, icons and small images.
        return T.Compose(
            [
                T.Resize(eval_resize(size)),
                T.RandomCrop(size),
                T.RandomAffine(degrees=10),
                T.ColorJitter(0.1, 0.1, 0.1),
                *_to_normalized_tensor(),
            ]
        )
    if augment == "none":
        return build_eval_transform(size)
    raise ImgclsError(f"unknown --augment {augment!r}; use one of {', '.join(AUGMENTS)}")
