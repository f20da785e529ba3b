"""Find labelled samples in a dataset folder: split folders (ImageFolder or Food-11 flat) or one ImageFolder root."""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

from imgcls.core.errors import ImgclsError
from imgcls.data.csv_layout import CsvOptions, discover_csv, images_folder, label_csv
from imgcls.data.samples import (
    IMAGE_EXTENSIONS,
    SPLIT_ALIASES,
    UNLABELED,
    DatasetSplits,
    Sample,
    canonical_split,
    carve_validation,
    is_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_ALIASES",
    "UNLABELED",
    "DatasetSplits",
    "Sample",
    "canonical_split",
    "carve_validation",
    "discover",
    "is_image",
]

log = logging.getLogger(__name__)

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
_FLAT_NAME = re.compile(r"^(\d+)_[^/]*$")
# train_images/, test-jpg/, images/ ...: folders of a CSV-labelled set, never class names on their own.
_SPLIT_LIKE = re.compile(
    r"^(train|training|test|testing|val|valid|validation|eval|evaluation)?[-_ ]?(images?|imgs?|jpe?g|png|tiff?|data|photos?)?$",
    re.I,
)


def list_images(folder: Path) -> list[Path]:
    entries = sorted(folder.iterdir())
    dangling = [p for p in entries if p.is_symlink() and not p.exists() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if dangling:
        shown = ", ".join(p.name for p in dangling[:5]) + (
            f" ... ({len(dangling)} in all)" if len(dangling) > 5 else ""
        )
        log.warning("skipping %d broken symbolic link(s) in %s: %s", len(dangling), folder, shown)
    return [p for p in entries if is_image(p)]


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
    too_long = [f.name for f, m in zip(files, matches) if m is not None and len(m.group(1)) > 6]
    if too_long:
        raise ImgclsError(f"{split_dir}: implausible class index in {', '.join(too_long[:10])}; rename them")
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


def _check_flat_indices(by_index: dict[int, list[Path]], where: Path, distinct: int) -> None:
    """A misnamed file (``50000000_9.jpg``) would otherwise make millions of classes: indices must be
    dense enough to be plausible given the ``distinct`` indices the training split uses."""
    bound = 2 * distinct + 10
    wild = sorted(str(p) for i, paths in by_index.items() if i > bound for p in paths)
    if wild:
        shown = ", ".join(Path(p).name for p in wild[:10]) + (f" ... ({len(wild)} in all)" if len(wild) > 10 else "")
        raise ImgclsError(
            f"{where}: implausible class index in {shown} ({distinct} distinct indices, so "
            f"indices above {bound} look like misnamed files); rename or remove them"
        )


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


def discover(
    root: str | Path,
    *,
    val_split: float | None = None,
    seed: int = 0,
    for_eval: bool = False,
    csv: CsvOptions | None = None,
) -> DatasetSplits:
    """``for_eval``: the data is only read, not trained on: a missing validation split is no error, and
    a single folder of class folders is all one split to evaluate (``test``). ``csv``: how to read a
    label CSV (data/csv_layout.py); a folder with one is always read through it.

    Whatever the layout, every image lies inside ``root`` (or ``--images``) and in one split only."""
    root = Path(root)
    if not root.is_dir():
        raise ImgclsError(f"data folder not found: {root}")
    opts = csv or CsvOptions()
    table = label_csv(root, opts)
    found = _discover(root, table, opts, val_split=val_split, seed=seed, for_eval=for_eval)
    bases = [images_folder(root, opts)] if opts.images else []
    return found.check(bases=bases, allow_outside=opts.allow_outside, where=str(table or root))


def _discover(root: Path, table, opts: CsvOptions, *, val_split, seed: int, for_eval: bool) -> DatasetSplits:
    if table is not None:
        return discover_csv(root, table, opts, val_split=val_split, seed=seed, for_eval=for_eval)
    if (root / "meta" / "train.txt").is_file() and (root / "images").is_dir():
        return _discover_food101(root, val_split if val_split or not for_eval else 0.0, seed)
    splits = _find_split_dirs(root)
    if splits:
        if for_eval and "val" in splits:
            val_split = None
        elif for_eval and val_split is None:
            val_split = 0.0
        return _discover_splits(root, splits, val_split, seed)
    folders = _class_dirs(root)
    if folders and all(_SPLIT_LIKE.match(d.name) for d in folders):
        raise ImgclsError(
            f"{root}: its folders ({', '.join(d.name for d in folders)}) are named like splits, not classes; "
            "a CSV-labelled set needs its label file (train.csv, labels.csv or --labels FILE), folders of "
            "classes go in training/ + validation/ (or train/ + test/)"
        )
    if folders:
        return labelled_folder(root) if for_eval and val_split is None else _discover_single_root(root, val_split, seed)
    if list_images(root):
        raise ImgclsError(
            f"{root}: images without split folders; put them in training/ and validation/ "
            "(flat <classindex>_<n>.jpg or one subfolder per class)"
        )
    raise ImgclsError(f"{root}: no images found (expected training/ + validation/ folders, or class subfolders)")


def _need_val_split(root: Path, have: str) -> ImgclsError:
    return ImgclsError(
        f"{root} has {have} but no validation split; pass --val-split 0.2 to hold out a stratified "
        "fifth of the training images (or add a validation/ folder)"
    )


def _discover_splits(root: Path, splits: dict[str, Path], val_split: float | None, seed: int) -> DatasetSplits:
    if "train" not in splits:
        names = " or ".join(f"{a}/" for a in SPLIT_ALIASES["train"])
        raise ImgclsError(f"{root}: has {', '.join(p.name for p in splits.values())} but no {names}")
    if "val" in splits and val_split is not None:
        raise ImgclsError(f"{root} already has a validation split; drop --val-split")
    if "val" not in splits and val_split is None:
        raise _need_val_split(root, " + ".join(f"{p.name}/" for p in splits.values()))
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
        for key, data in read.items():
            if UNLABELED not in data:
                _check_flat_indices(data, splits[key], len(read["train"]))
        indices = set(read["train"]) | set(read.get("val", {}))
        classes = _flat_class_names(root, indices)
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
    train = _samples(read["train"], index_of)
    if "val" in read:
        val = _samples(read["val"], index_of)
    elif val_split == 0.0:  # evaluation only: no validation split needed
        val = []
    else:
        train, val = carve_validation(train, val_split, seed, splits["train"])
        layout += "+val-split"
    return DatasetSplits(str(root), layout, classes, train, val, test, test_labeled)


def _discover_single_root(root: Path, val_split: float | None, seed: int) -> DatasetSplits:
    if val_split is None:
        raise _need_val_split(root, "class folders")
    _, by_class, _ = _read_split(root, allow_unlabeled=False)
    classes = sorted(by_class)
    every = _samples(by_class, {c: i for i, c in enumerate(classes)}.__getitem__)
    train, val = carve_validation(every, val_split, seed, root)
    return DatasetSplits(str(root), "imagefolder+val-split", classes, train, val)


def _discover_food101(root: Path, val_split: float | None, seed: int) -> DatasetSplits:
    """Food-101's own layout: images/<class>/<id>.jpg listed by meta/{train,test}.txt as <class>/<id>."""
    meta = root / "meta"
    if val_split is None:
        raise _need_val_split(root, "Food-101's meta/train.txt + meta/test.txt")
    listed = {}
    for split in ("train", "test"):
        path = meta / f"{split}.txt"
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []
        unique = list(dict.fromkeys(lines))  # a repeated line would put one image in train and validation
        if len(unique) < len(lines):
            log.warning("%s lists %d line(s) more than once; each image is used once", path, len(lines) - len(unique))
        listed[split] = unique
    both = sorted(set(listed["train"]) & set(listed["test"]))
    if both:
        shown = ", ".join(both[:10]) + (f" ... ({len(both)} in all)" if len(both) > 10 else "")
        raise ImgclsError(
            f"{meta}: train.txt and test.txt both list {shown}; an image is trained on or held out, not both"
        )
    names_file = meta / "classes.txt"
    if names_file.is_file():
        classes = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()]
    else:
        classes = sorted({ln.split("/", 1)[0] for ln in listed["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list[Sample]] = {}
    for split, lines in listed.items():
        samples, problems = [], []
        for line in lines:
            cls, _, stem = line.partition("/")
            path = root / "images" / cls / (stem if Path(stem).suffix else stem + ".jpg")
            if cls not in index or not stem:
                problems.append(f"{line!r} (class not in {names_file.name})")
            elif not path.is_file():
                problems.append(f"{line!r} (no file {path.relative_to(root)})")
            else:
                samples.append(Sample(str(path), index[cls]))
        if problems:
            shown = "; ".join(problems[:5]) + (f" ... ({len(problems)} in all)" if len(problems) > 5 else "")
            raise ImgclsError(f"{meta / (split + '.txt')}: {shown}")
        out[split] = samples
    if not out["train"]:
        raise ImgclsError(f"{meta / 'train.txt'}: lists no images")
    if val_split == 0.0:  # evaluation only
        return DatasetSplits(str(root), "food101", classes, out["train"], [], out["test"], bool(out["test"]))
    train, val = carve_validation(out["train"], val_split, seed, root)
    return DatasetSplits(str(root), "food101+val-split", classes, train, val, out["test"], bool(out["test"]))


def labelled_folder(root: str | Path) -> DatasetSplits:
    """Every image of one folder of class folders, as the split to evaluate (``test``)."""
    root = Path(root)
    _, by_class, _ = _read_split(root, allow_unlabeled=False)
    classes = sorted(by_class)
    every = _samples(by_class, {c: i for i, c in enumerate(classes)}.__getitem__)
    return DatasetSplits(str(root), "imagefolder", classes, [], [], every, True)


def unlabeled_samples(paths: list[str | Path]) -> list[Sample]:
    """Files and folders (searched recursively) given on the command line, for prediction."""
    return [s for s, _ in samples_with_ids(paths)]


def samples_with_ids(paths: list[str | Path]) -> list[tuple[Sample, str]]:
    """Samples and the ``Id`` each gets in a predictions CSV: the file stem for files given directly and
    for flat folders (the Food-11/Kaggle submission form), the path relative to the given folder when it
    has subfolders (``a/0.jpg`` and ``b/0.jpg`` stay apart); the full path if stems still collide."""
    out: list[tuple[Sample, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            entries = list(p.rglob("*"))  # one walk of the tree for both lists
            dangling = [q for q in entries if q.is_symlink() and not q.exists()]
            if dangling:
                log.warning("skipping %d broken symbolic link(s) under %s", len(dangling), p)
            found = sorted(q for q in entries if is_image(q))
            if not found:
                raise ImgclsError(f"{p}: no images found")
            nested = any(q.parent != p for q in found)
            out += [(Sample(str(q), UNLABELED), q.relative_to(p).as_posix() if nested else q.stem) for q in found]
        elif p.is_file():
            out.append((Sample(str(p), UNLABELED), p.stem))
        else:
            raise ImgclsError(f"not found: {p}")
    ids = [i for _, i in out]
    if len(set(ids)) != len(ids):
        out = [(s, s.path) for s, _ in out]
    return out
