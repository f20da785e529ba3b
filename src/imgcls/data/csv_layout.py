"""Datasets labelled by a CSV beside a folder of images: the Kaggle form, and most exports.

``DIR/train.csv`` (or ``labels.csv``, ``train_labels.csv``, or ``--labels FILE``) names each image in
one column (with or without its extension; relative to DIR or to one images folder: ``train_images/``,
``train/``, ``images/``, ``train-jpg/``, or ``--images DIR``). Its labels come in one of three forms,
each detected from the file and each overridable:

- one label column, string or integer (``id,label``): single-label;
- one-hot class columns (``image_id,healthy,multiple_diseases,rust,scab``): single-label when every row
  has exactly one 1, multi-label otherwise;
- one column of tags (``image_name,tags`` with ``"clear primary road"``): multi-label.

Validation comes from ``valid.csv``, a boolean ``is_valid`` or a string ``split`` column, or
``--val-split``; a labelled ``test.csv`` is the held-out split, an unlabelled one (or
``sample_submission.csv``) lists images to predict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from imgcls.core import tables
from imgcls.core.errors import ImgclsError
from imgcls.data.samples import IMAGE_EXTENSIONS, UNLABELED, DatasetSplits, Sample, carve_validation, is_image

log = logging.getLogger(__name__)

LABEL_FILES = ("train.csv", "labels.csv", "train_labels.csv")
VALID_FILES = ("valid.csv", "val.csv", "validation.csv")
TEST_FILES = ("test.csv", "test_labels.csv")
SUBMISSION_FILES = ("sample_submission.csv",)
IMAGE_DIRS = {
    "train": ("train_images", "train", "images", "train-jpg", "training"),
    "test": ("test_images", "test", "images", "test-jpg", "evaluation"),
}
SPLIT_COLUMNS = ("is_valid", "split")
TRUE = {"1", "true", "yes", "y", "t", "valid", "val", "validation"}
FALSE = {"0", "false", "no", "n", "f", "train", "training"}
SPLIT_NAMES = {"train": "train", "training": "train", "valid": "val", "val": "val", "validation": "val"}
SPLIT_NAMES |= {"test": "test", "evaluation": "test", "holdout": "test"}
TAG_COLUMNS = ("tags", "labels")
LABEL_NAMES = ("label", "labels", "tags", "class", "category", "target", "y", "breed", "species")


@dataclass(frozen=True)
class CsvOptions:
    labels: str | None = None  # the label CSV (default: the first of LABEL_FILES in the data folder)
    images: str | None = None  # the folder the image column points into
    image_col: str | None = None
    label_col: str | None = None  # one column, or comma-separated one-hot columns
    label_sep: str | None = None  # tags separator (default: whitespace)
    task: str = "auto"  # auto | single | multilabel
    skip_missing: bool = False
    allow_outside: bool = False  # image paths may lead out of the data folder (../, absolute paths)


def label_csv(root: Path, opts: CsvOptions) -> Path | None:
    """The label CSV of ``root``, when it is a CSV-labelled dataset."""
    if opts.labels:
        path = Path(opts.labels)
        path = path if path.is_absolute() or path.exists() else root / path
        if not path.is_file():
            raise ImgclsError(f"--labels {opts.labels}: no such file")
        return path
    return next((root / n for n in LABEL_FILES if (root / n).is_file()), None)


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    table = tables.read_table(path)
    return table.header, table.rows


class _Folder:
    """Image files of one folder by name and by stem, listed once (names may come without extension)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._names: dict[str, Path] | None = None
        self._stems: dict[str, Path] = {}

    def _index(self) -> dict[str, Path]:
        if self._names is None:
            files = [p for p in self.folder.iterdir() if is_image(p)] if self.folder.is_dir() else []
            self._names = {p.name: p for p in files}
            self._stems = {p.stem: p for p in files}
        return self._names

    def find(self, value: str) -> Path | None:
        if not value:
            return None
        if "/" in value or "\\" in value:  # a path below the folder
            path = self.folder / value.replace("\\", "/")
            if path.is_file():
                return path
            return next(
                (path.with_name(path.name + e) for e in IMAGE_EXTENSIONS if path.with_name(path.name + e).is_file()),
                None,
            )
        names = self._index()
        return names.get(value) or self._stems.get(value)


def images_folder(root: Path, opts: CsvOptions) -> Path:
    """``--images``: as given when it exists (or is absolute), else under the data folder."""
    folder = Path(opts.images)
    folder = folder if folder.is_absolute() or folder.is_dir() else root / folder
    if not folder.is_dir():
        raise ImgclsError(f"--images {opts.images}: no such folder")
    return folder


def _folders(root: Path, opts: CsvOptions, split: str) -> list[Path]:
    if opts.images:
        return [images_folder(root, opts)]
    return [root / d for d in IMAGE_DIRS[split] if (root / d).is_dir()] + [root]


def _image_column(path: Path, header: list[str], rows: list[dict], folders: list[Path], opts: CsvOptions):
    """(column, folder index): the column whose values resolve to image files, and where."""
    if opts.image_col and opts.image_col not in header:
        raise ImgclsError(f"{path}: no column {opts.image_col!r} (--image-col); columns: {', '.join(header)}")
    columns = [opts.image_col] if opts.image_col else header
    sample = rows[:: max(1, len(rows) // 50)][:50]
    best = (0, None, None)
    for column in columns:
        for folder in folders:
            index = _Folder(folder)
            hits = sum(index.find(r.get(column, "")) is not None for r in sample)
            if hits > best[0]:
                best = (hits, column, index)
    if best[1] is None:
        tried = ", ".join(str(f) for f in folders)
        raise ImgclsError(
            f"{path}: no column names image files (tried columns {', '.join(columns)} in {tried}); "
            "name the column with --image-col and the folder with --images"
        )
    return best[1], best[2]


def _is_binary(values: list[str]) -> bool:
    return all(v in ("0", "1", "0.0", "1.0") for v in values)


@dataclass
class _Labels:
    task: str  # single | multilabel
    classes: list[str]
    form: str  # column | onehot | tags
    columns: list[str]
    sep: str | None = None


def _label_form(path: Path, header: list[str], rows: list[dict], image_col: str, opts: CsvOptions) -> _Labels:
    """How the rows carry their labels (see the module docstring)."""
    if opts.label_col:
        columns = [c.strip() for c in opts.label_col.split(",") if c.strip()]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ImgclsError(f"{path}: no column {', '.join(missing)} (--label-col); columns: {', '.join(header)}")
    else:
        columns = [c for c in header if c != image_col and c.lower() not in SPLIT_COLUMNS]
    if not columns:
        raise ImgclsError(f"{path}: no label column beside {image_col!r}; name it with --label-col")
    if len(columns) > 1:
        if not all(_is_binary([r[c] for r in rows]) for c in columns):
            named = [c for c in columns if c.lower() in LABEL_NAMES]
            if len(named) != 1:
                raise ImgclsError(
                    f"{path}: several label columns ({', '.join(columns)}) that are not one-hot 0/1 columns; "
                    "choose one with --label-col"
                )
            columns = named
        else:
            empty = [c for c in columns if not any(r[c] in ("1", "1.0") for r in rows)]
            if empty:
                raise ImgclsError(f"{path}: class column(s) {', '.join(empty)} have no positive (1) row")
            single = all(sum(r[c] in ("1", "1.0") for c in columns) == 1 for r in rows)
            task = opts.task if opts.task != "auto" else ("single" if single else "multilabel")
            if task == "single" and not single:
                bad = sum(sum(r[c] in ("1", "1.0") for c in columns) != 1 for r in rows)
                raise ImgclsError(f"{path}: --task single, but {bad} row(s) do not have exactly one 1")
            return _Labels(task, list(columns), "onehot", list(columns))
    (column,) = columns
    values = [r[column] for r in rows]
    sep = opts.label_sep
    # One value per row names the class, spaces and shared words included ("apple pie", "apple"): tags
    # only when the column is named for them or the user gives their separator; --task single never
    # splits, --task multilabel alone trains each row's one value as its one label.
    several = any(len(v.split()) > 1 for v in set(values))
    tags = opts.task != "single" and (sep is not None or (several and column.lower() in TAG_COLUMNS))
    if opts.task == "single" and several and column.lower() == "tags":
        raise ImgclsError(f"{path}: {column!r} lists several labels per image; --task single cannot train it")
    empty = [i for i, v in enumerate(values) if not v]
    if empty:
        shown = ", ".join(rows[i][image_col] or f"line {i + 2}" for i in empty[:10])
        raise ImgclsError(f"{path}: {len(empty)} row(s) with an empty {column!r}: {shown}")
    if tags:
        names = sorted({t for v in values for t in _split(v, sep)})
        return _Labels("multilabel", names, "tags", [column], sep)
    names = sorted(set(values), key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    return _Labels("single", names, "column", [column])


def _split(value: str, sep: str | None) -> list[str]:
    return [t.strip() for t in (value.split(sep) if sep else value.split()) if t.strip()]


def _row_label(row: dict, labels: _Labels, index: dict[str, int], path: Path):
    if labels.form == "onehot":
        hot = tuple(i for i, c in enumerate(labels.columns) if row.get(c) in ("1", "1.0"))
        return hot[0] if labels.task == "single" else hot
    value = row.get(labels.columns[0], "")
    if labels.form == "tags":
        names = _split(value, labels.sep)
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ImgclsError(f"{path}: label(s) {', '.join(unknown)} are not among the training classes")
        return tuple(sorted({index[n] for n in names}))
    if value not in index:
        raise ImgclsError(f"{path}: label {value!r} is not among the training classes")
    return index[value] if labels.task == "single" else (index[value],)


def _samples(path: Path, rows: list[dict], image_col: str, files: _Folder, labels: _Labels | None, index, opts):
    """(samples, missing file names, row split names) of a table; duplicates with equal labels are merged,
    conflicting ones refused."""
    out: dict[str, Sample] = {}
    split_of: dict[str, str] = {}
    missing: list[str] = []
    conflicts: list[str] = []
    split_col = next((c for c in rows[0] if c.lower() in SPLIT_COLUMNS), None)
    for row in rows:
        name = row.get(image_col, "")
        found = files.find(name)
        if found is None:
            missing.append(name or "(empty)")
            continue
        label = _row_label(row, labels, index, path) if labels is not None else UNLABELED
        key = str(found)
        if key in out and out[key].label != label:
            conflicts.append(name)
            continue
        out[key] = Sample(key, label)
        if split_col:
            split_of[key] = _row_split(row[split_col], split_col, path)
    if conflicts:
        shown = ", ".join(conflicts[:10]) + (f" ... ({len(conflicts)} in all)" if len(conflicts) > 10 else "")
        raise ImgclsError(f"{path}: the same image listed with different labels: {shown}")
    if missing and not opts.skip_missing:
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ImgclsError(
            f"{path}: {len(missing)} row(s) name files that are not in {files.folder}: {shown} "
            "(--skip-missing goes on without them; a training lists them in bad_files.txt)"
        )
    return list(out.values()), missing, split_of


def _row_split(value: str, column: str, path: Path) -> str:
    v = value.strip().lower()
    if column.lower() == "is_valid":
        if v in TRUE:
            return "val"
        if v in FALSE:
            return "train"
    elif v in SPLIT_NAMES:
        return SPLIT_NAMES[v]
    raise ImgclsError(f"{path}: {column} value {value!r} is not one of train/valid (true/false)")


def discover_csv(root: Path, table_path: Path, opts: CsvOptions, *, val_split, seed: int, for_eval: bool):
    header, rows = read_table(table_path)
    image_col, files = _image_column(table_path, header, rows, _folders(root, opts, "train"), opts)
    labels = _label_form(table_path, header, rows, image_col, opts)
    if opts.task == "multilabel" and labels.task == "single":
        labels.task = "multilabel"  # one label per image, trained as multi-label
    index = {c: i for i, c in enumerate(labels.classes)}
    if len(labels.classes) < 2 and not for_eval:  # evaluating a subset of a run's classes is fine
        raise ImgclsError(f"{table_path}: only one class ({', '.join(labels.classes)}); a classifier needs two or more")
    samples, missing, split_of = _samples(table_path, rows, image_col, files, labels, index, opts)
    notes = [(m, f"file not found (listed in {table_path.name})") for m in missing]
    train = [s for s in samples if split_of.get(s.path, "train") == "train"]
    val = [s for s in samples if split_of.get(s.path) == "val"]
    test = [s for s in samples if split_of.get(s.path) == "test"]
    valid_file = next((root / n for n in VALID_FILES if (root / n).is_file()), None)
    if valid_file is not None:
        if val:
            raise ImgclsError(f"{root}: both {valid_file.name} and a split column in {table_path.name}; keep one")
        v_header, v_rows = read_table(valid_file)
        v_col, v_files = _image_column(
            valid_file, v_header, v_rows, _folders(root, opts, "train"), replace_col(opts, image_col, v_header)
        )
        val, v_missing, _ = _samples(valid_file, v_rows, v_col, v_files, labels, index, opts)
        notes += [(m, f"file not found (listed in {valid_file.name})") for m in v_missing]
    layout = f"csv:{table_path.name}"
    if val and val_split is not None:
        raise ImgclsError(
            f"{root} already has a validation split ({valid_file.name if valid_file else 'split column'}); drop --val-split"
        )
    if not val:
        if for_eval and val_split is None:
            pass
        elif val_split is None:
            raise ImgclsError(
                f"{root} has {table_path.name} but no validation split; pass --val-split 0.2 to hold out a "
                "stratified fifth of its images (or add valid.csv, or an is_valid column)"
            )
        else:
            train, val = carve_validation(train, val_split, seed, table_path)
            layout += "+val-split"
    if not test:
        test, labelled, t_missing = _test_split(root, opts, labels, index, image_col)
        notes += t_missing
    else:
        labelled = True
    if for_eval and train and not val and not test:  # one label CSV, only read to evaluate: all of it
        train, test, labelled = [], train, True
    if not train and not for_eval:
        raise ImgclsError(f"{table_path}: no training rows")
    return DatasetSplits(
        str(root),
        layout,
        labels.classes,
        train,
        val,
        test,
        test_labeled=labelled and bool(test),
        task=labels.task,
        missing=notes,
    )


def replace_col(opts: CsvOptions, image_col: str, header: list[str]) -> CsvOptions:
    """Another table of the same dataset names its images in the same column when it has it."""
    from dataclasses import replace

    return replace(opts, image_col=image_col) if image_col in header else opts


def _test_split(root: Path, opts: CsvOptions, labels: _Labels, index, image_col: str):
    """(samples, labelled, missing notes) from test.csv (labelled when it carries labels in the training
    form) or sample_submission.csv (unlabelled)."""
    path = next((root / n for n in TEST_FILES + SUBMISSION_FILES if (root / n).is_file()), None)
    if path is None:
        return [], False, []
    header, rows = read_table(path)
    test_opts = CsvOptions(image_col=image_col if image_col in header else None, skip_missing=True)
    folders = _folders(root, CsvOptions(), "test") if not opts.images else _folders(root, opts, "test")
    try:
        col, files = _image_column(path, header, rows, folders, test_opts)
    except ImgclsError as exc:
        log.warning("%s: its images were not found, so there is no held-out split (%s)", path.name, exc)
        return [], False, []
    carries = [c for c in labels.columns if c in header] == labels.columns and path.name in TEST_FILES
    carries = carries and all(r.get(labels.columns[0], "") for r in rows)
    samples, missing, _ = _samples(path, rows, col, files, labels if carries else None, index, test_opts)
    return samples, carries, [(m, f"file not found (listed in {path.name})") for m in missing]
