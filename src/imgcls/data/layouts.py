"""Find labelled samples in a dataset folder: split folders (ImageFolder or Food-11 flat) or one ImageFolder root."""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.errors import ImgclsError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_ALIASES = {
    "train": ("training", "train"),
    "val": ("validation", "val", "valid"),
    "test": ("evaluation", "test"),
}
FOOD11_CLASSES = [
    "Bread",
    "Dairy product",
    "Dessert",
    "Egg",
    "Fried food",
    "Meat",
    "Noodles/Pasta",
    "Rice",
    "Seafood",
    "Soup",
    "Vegetable/Fruit",
]
UNLABELED = -1
_FLAT_NAME = re.compile(r"^(\d+)_[^/]*$")


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # UNLABELED for files without a label


@dataclass
class DatasetSplits:
    root: str
    layout: str  # "imagefolder", "flat" or "imagefolder+val-split"
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    test_labeled: bool = False

    def split(self, name: str) -> list[Sample]:
        key = canonical_split(name)
        return {"train": self.train, "val": self.val, "test": self.test}[key]


def canonical_split(name: str) -> str:
    for key, aliases in SPLIT_ALIASES.items():
        if name == key or name in aliases:
            return key
    raise ImgclsError(f"unknown split {name!r}; use one of training, validation, evaluation")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image(p))


def _find_split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for key, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            if (root / alias).is_dir():
                found[key] = root / alias
                break
    return found


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _flat_labels(files: list[Path], split_dir: Path, *, allow_unlabeled: bool) -> list[int] | None:
    """Labels from ``<index>_<n>.ext`` names; None when the split is wholly unlabeled (and allowed to be)."""
    matches = [_FLAT_NAME.match(f.name) for f in files]
    bad = [f.name for f, m in zip(files, matches) if m is None]
    if bad and allow_unlabeled and len(bad) == len(files):
        return None
    if bad:
        shown = ", ".join(bad[:10]) + (f" ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise ImgclsError(
            f"{split_dir}: flat layout expects files named <classindex>_<n>.<ext>, "
            f"but these do not start with an integer: {shown}"
        )
    return [int(m.group(1)) for m in matches]


def _read_split(split_dir: Path, *, allow_unlabeled: bool) -> tuple[str, dict, bool]:
    """(kind, data, labeled): kind 'imagefolder' -> {class: [paths]}; 'flat' -> {index: [paths]}."""
    class_dirs = _class_dirs(split_dir)
    if class_dirs:
        by_class = {d.name: list_images(d) for d in class_dirs}
        by_class = {k: v for k, v in by_class.items() if v}
        if not by_class:
            raise ImgclsError(f"{split_dir}: no images found in its class folders ({', '.join(IMAGE_EXTENSIONS)})")
        return "imagefolder", by_class, True
    files = list_images(split_dir)
    if not files:
        raise ImgclsError(f"{split_dir}: no images found (expected class subfolders or <classindex>_<n>.jpg files)")
    labels = _flat_labels(files, split_dir, allow_unlabeled=allow_unlabeled)
    if labels is None:
        return "flat", {UNLABELED: files}, False
    by_index: dict[int, list[Path]] = defaultdict(list)
    for f, lab in zip(files, labels):
        by_index[lab].append(f)
    return "flat", dict(by_index), True


def _flat_class_names(root: Path, indices: set[int]) -> list[str]:
    n = max(indices) + 1
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(names) < n:
            raise ImgclsError(f"{names_file} lists {len(names)} classes but files use class index {n - 1}")
        return names
    if n == len(FOOD11_CLASSES) and len(indices) == n:
        return list(FOOD11_CLASSES)
    return [f"class_{i}" for i in range(n)]


def _samples(data: dict, index_of) -> list[Sample]:
    return [Sample(str(p), index_of(k)) for k, paths in sorted(data.items(), key=lambda kv: str(kv[0])) for p in paths]


def discover(root: str | Path, *, val_split: float | None = None, seed: int = 0) -> DatasetSplits:
    root = Path(root)
    if not root.is_dir():
        raise ImgclsError(f"data folder not found: {root}")
    splits = _find_split_dirs(root)
    if splits:
        return _discover_splits(root, splits, val_split)
    if _class_dirs(root):
        return _discover_single_root(root, val_split, seed)
    if list_images(root):
        raise ImgclsError(
            f"{root}: images without split folders; put them in training/ and validation/ "
            "(flat <classindex>_<n>.jpg or one subfolder per class)"
        )
    raise ImgclsError(f"{root}: no images found (expected training/ + validation/ folders, or class subfolders)")


def _discover_splits(root: Path, splits: dict[str, Path], val_split: float | None) -> DatasetSplits:
    for key in ("train", "val"):
        if key not in splits:
            names = " or ".join(f"{a}/" for a in SPLIT_ALIASES[key])
            raise ImgclsError(f"{root}: has {', '.join(p.name for p in splits.values())} but no {names}")
    if val_split is not None:
        raise ImgclsError(f"{root} already has a validation split; drop --val-split")
    kinds = {}
    read = {}
    for key, folder in splits.items():
        kinds[key], read[key], _ = _read_split(folder, allow_unlabeled=(key == "test"))
    if len(set(kinds.values())) > 1:
        raise ImgclsError(f"{root}: splits mix class subfolders and flat files ({kinds}); use one layout")
    layout = kinds["train"]
    test_labeled = "test" in read and UNLABELED not in read["test"]

    if layout == "imagefolder":
        classes = sorted(read["train"])
        index_of = {c: i for i, c in enumerate(classes)}.__getitem__
    else:
        indices = set(read["train"])
        classes = _flat_class_names(root, indices | set(read["val"]))
        index_of = int

    for key in ("val", "test"):
        if key in read and (key != "test" or test_labeled):
            extra = sorted(set(read[key]) - set(read["train"]), key=str)
            if extra:
                raise ImgclsError(
                    f"{splits[key]}: class(es) {', '.join(map(str, extra))} not present in {splits['train']}; "
                    "every class must have training images"
                )
    test = []
    if "test" in read:
        test = _samples(read["test"], index_of) if test_labeled else _samples(read["test"], lambda _: UNLABELED)
    return DatasetSplits(
        root=str(root),
        layout=layout,
        classes=classes,
        train=_samples(read["train"], index_of),
        val=_samples(read["val"], index_of),
        test=test,
        test_labeled=test_labeled,
    )


def _discover_single_root(root: Path, val_split: float | None, seed: int) -> DatasetSplits:
    if val_split is None:
        raise ImgclsError(
            f"{root} has class folders but no training/validation split; pass --val-split 0.2 "
            "(or create training/ and validation/ folders)"
        )
    if not 0.0 < val_split < 1.0:
        raise ImgclsError(f"--val-split must be between 0 and 1, got {val_split}")
    _, by_class, _ = _read_split(root, allow_unlabeled=False)
    classes = sorted(by_class)
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for index, name in enumerate(classes):
        paths = list(by_class[name])
        rng.shuffle(paths)
        # Stratified: every class keeps at least one training image, and gets a validation one when it can.
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_split))) if len(paths) > 1 else 0
        val += [Sample(str(p), index) for p in sorted(paths[:n_val])]
        train += [Sample(str(p), index) for p in sorted(paths[n_val:])]
    if not val:
        raise ImgclsError(f"{root}: too few images to hold out a validation split")
    return DatasetSplits(str(root), "imagefolder+val-split", classes, train, val)


def unlabeled_samples(paths: list[str | Path]) -> list[Sample]:
    """Files and folders (searched recursively) given on the command line, for prediction."""
    out: list[Sample] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if is_image(q))
            if not found:
                raise ImgclsError(f"{p}: no images found")
            out += [Sample(str(q), UNLABELED) for q in found]
        elif p.is_file():
            out.append(Sample(str(p), UNLABELED))
        else:
            raise ImgclsError(f"not found: {p}")
    return out
