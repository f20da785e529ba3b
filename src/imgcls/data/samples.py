"""What a dataset is once found: samples (a path and its label) in training, validation and held-out
splits, and the seeded stratified hold-out that carves validation out of training."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from imgcls.core.errors import ImgclsError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
UNLABELED = -1
SPLIT_ALIASES = {
    "train": ("training", "train"),
    "val": ("validation", "val", "valid"),
    "test": ("evaluation", "test"),
}


@dataclass(frozen=True)
class Sample:
    path: str
    label: int | tuple[int, ...]  # a class index (UNLABELED for files without a label); multi-label: indices


@dataclass
class DatasetSplits:
    root: str
    layout: str  # "imagefolder", "flat", "imagefolder+val-split", ... or "saved" (a run's splits.csv)
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    test_labeled: bool = False
    task: str = "single"  # or "multilabel": each label is a tuple of class indices
    missing: list[tuple[str, str]] = field(default_factory=list)  # listed but skipped: (name, reason)

    @property
    def category(self) -> str:
        """How the data itself labels a class, which is what a predictions CSV writes: by its index
        (Food-11's flat ``<index>_<n>.jpg`` names) or by its name (folders, label CSVs)."""
        return "index" if self.layout.startswith("flat") else "name"

    def split(self, name: str) -> list[Sample]:
        key = canonical_split(name)
        return {"train": self.train, "val": self.val, "test": self.test}[key]

    def check(self, *, bases: list[str | Path] = (), allow_outside: bool = False, where: str = "") -> DatasetSplits:
        """Refuse (one line) images that lie outside the data folder (and ``bases``, e.g. ``--images``) unless
        ``allow_outside``, and images listed in two splits. Returns ``self``."""
        where = where or self.root
        if not allow_outside:
            outside = outside_paths([s.path for s in self.train + self.val + self.test], [self.root, *bases])
            if outside:
                raise ImgclsError(
                    f"{where}: {len(outside)} image(s) lie outside {self.root}: {_shown(outside)}; a downloaded "
                    "dataset could point at your own files this way (pass --allow-outside-data if they are meant)"
                )
        seen: dict[str, str] = {}
        both: list[str] = []
        for name in ("train", "val", "test"):
            for s in self.split(name):
                key = os.path.normpath(os.path.abspath(s.path))
                if seen.setdefault(key, name) != name:
                    both.append(f"{s.path} ({seen[key]} and {name})")
        if both:
            raise ImgclsError(
                f"{where}: {len(both)} image(s) are in two splits: {_shown(both)}; an image is trained on, "
                "validated on or held out, not two of these"
            )
        return self


def _shown(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def inside(path: str | Path, bases: list[str | Path]) -> bool:
    """Whether ``path`` lies in one of the ``bases`` once ``..`` and ``.`` are resolved (lexically: a
    dataset made of symbolic links stays inside its folder)."""
    target = os.path.normpath(os.path.abspath(path))
    for base in bases:
        root = os.path.normpath(os.path.abspath(base))
        if target == root or target.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


def outside_paths(paths: list[str], bases: list[str | Path]) -> list[str]:
    return [p for p in paths if not inside(p, bases)]


def canonical_split(name: str) -> str:
    for key, aliases in SPLIT_ALIASES.items():
        if name == key or name in aliases:
            return key
    raise ImgclsError(f"unknown split {name!r}; use one of training, validation, evaluation")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def carve_validation(train: list[Sample], val_split: float, seed: int, where: Path) -> tuple[list, list]:
    """A stratified, seeded hold-out: every class keeps at least one training image and gets a
    validation one when it has two or more (multi-label samples: iterative stratification)."""
    if any(isinstance(s.label, tuple) for s in train):
        return _carve_multilabel(train, val_split, seed, where)
    rng = random.Random(seed)
    by_label: dict[int, list[Sample]] = defaultdict(list)
    for s in train:
        by_label[s.label].append(s)
    keep: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_label):
        items = sorted(by_label[label], key=lambda s: s.path)
        rng.shuffle(items)
        n_val = min(len(items) - 1, max(1, round(len(items) * val_split))) if len(items) > 1 else 0
        val += sorted(items[:n_val], key=lambda s: s.path)
        keep += sorted(items[n_val:], key=lambda s: s.path)
    if not val:
        raise ImgclsError(f"{where}: too few images to hold out a validation split")
    return keep, val


def _carve_multilabel(train: list[Sample], val_split: float, seed: int, where: Path) -> tuple[list, list]:
    """Iterative stratification (Sechidis, Tsoumakas and Vlahavas, 2011): the rarest label first, each of
    its images goes to the side that still wants most of that label, so rare labels land on both sides
    in proportion. Seeded; images without labels are split by the fraction alone."""
    rng = random.Random(seed)
    items = sorted(train, key=lambda s: s.path)
    rng.shuffle(items)
    fractions = {"val": val_split, "train": 1.0 - val_split}
    by_label: dict[int, list[int]] = defaultdict(list)
    for k, s in enumerate(items):
        for label in s.label:
            by_label[label].append(k)
    wanted = {side: {lab: len(ks) * f for lab, ks in by_label.items()} for side, f in fractions.items()}
    room = {side: len(items) * f for side, f in fractions.items()}
    side_of: dict[int, str] = {}
    remaining = {lab: set(ks) for lab, ks in by_label.items()}
    while any(remaining.values()):
        label = min((lab for lab, ks in remaining.items() if ks), key=lambda lab: (len(remaining[lab]), lab))
        for k in sorted(remaining[label]):
            side = max(fractions, key=lambda sd: (wanted[sd][label], room[sd], sd == "train"))
            side_of[k] = side
            room[side] -= 1
            for other in items[k].label:
                wanted[side][other] -= 1
                remaining[other].discard(k)
    for k in range(len(items)):
        if k not in side_of:  # no label at all
            side = max(fractions, key=lambda sd: (room[sd], sd == "train"))
            side_of[k] = side
            room[side] -= 1
    val = sorted((items[k] for k in side_of if side_of[k] == "val"), key=lambda s: s.path)
    keep = sorted((items[k] for k in side_of if side_of[k] == "train"), key=lambda s: s.path)
    if not val or not keep:
        raise ImgclsError(f"{where}: too few images to hold out a validation split")
    return keep, val
