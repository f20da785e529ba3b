"""CSV-labelled datasets: every label form, validation and held-out sources, and every error as one line.
The sets come from scripts/food5_variants.py run on generated photos (and hand-written CSVs)."""

import csv
import runpy
import sys
from pathlib import Path

import pytest

from imgcls.cli import main
from imgcls.core.errors import ImgclsError
from imgcls.data.csv_layout import CsvOptions
from imgcls.data.layouts import UNLABELED, discover

from conftest import write_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "food5_variants.py"
COLOURS = {"apple_pie": (220, 60, 40), "baklava": (40, 200, 60), "beef_tartare": (50, 70, 220)}


def make_food(root: Path, per_class=(12, 4)) -> Path:
    """A food5-shaped tree of generated photos: train/<class>/*.jpg + test/<class>/*.jpg."""
    for split, n in zip(("train", "test"), per_class):
        for k, (cls, colour) in enumerate(COLOURS.items()):
            for i in range(n):
                write_image(root / split / cls / f"{1000 * k + i}.jpg", colour=colour, size=(40, 36), seed=i + 50 * k)
    return root


def variants(src: Path, out: Path, kinds: str, *extra: str) -> Path:
    argv = sys.argv
    sys.argv = ["food5_variants.py", str(src), str(out), "--kinds", kinds, *extra]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(SCRIPT), run_name="__main__")
        assert done.value.code == 0
    finally:
        sys.argv = argv
    return out


@pytest.fixture(scope="module")
def food(tmp_path_factory):
    root = tmp_path_factory.mktemp("food")
    src = make_food(root / "food")
    return variants(src, root / "v", "csv,onehot,multilabel,noisy")


def write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def one_line_error(capsys, argv, *expected):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_kaggle_csv_with_a_labelled_test_csv(food):
    s = discover(food / "csv", val_split=0.25, seed=0)
    assert s.layout == "csv:train.csv+val-split" and s.task == "single"
    assert s.classes == sorted(COLOURS) and len(s.train) + len(s.val) == 36 and len(s.test) == 12
    assert s.test_labeled and all(Path(x.path).parent.name == "train_images" for x in s.train)
    by_class = {c: sum(x.label == i for x in s.val) for i, c in enumerate(s.classes)}
    assert set(by_class.values()) == {3}  # stratified: a quarter of each class


def test_one_hot_columns_single_and_multi(food, tmp_path):
    s = discover(food / "onehot", val_split=0.25, seed=0)
    assert s.layout.startswith("csv:labels.csv") and s.task == "single" and s.test_labeled
    rows = list(csv.reader(open(food / "onehot" / "labels.csv")))
    rows[1][1:] = ["1", "1", "0"]  # one row with two classes: the set is multi-label
    write_table(tmp_path / "m" / "labels.csv", rows[0], rows[1:])
    (tmp_path / "m" / "images").symlink_to(food / "onehot" / "images")
    m = discover(tmp_path / "m", val_split=0.25, seed=0)
    assert m.task == "multilabel" and any(len(x.label) == 2 for x in m.train + m.val)


def test_tags_column_is_multi_label_and_stratified_iteratively(food):
    s = discover(food / "multilabel", val_split=0.25, seed=0)
    assert s.task == "multilabel" and s.classes == sorted(COLOURS) and s.test_labeled
    for split in (s.train, s.val):
        present = {c for x in split for c in x.label}
        assert present == {0, 1, 2}  # every label on both sides


def test_integer_labels_names_without_extension_and_spaces_in_class_names(tmp_path):
    root = tmp_path / "d"
    for i in range(8):
        write_image(root / f"img{i}.png", colour=(30 * i, 90, 90))
    write_table(root / "labels.csv", ["file", "label"], [[f"img{i}", i % 2] for i in range(8)])
    s = discover(root, val_split=0.25, seed=0)
    assert s.classes == ["0", "1"] and s.task == "single" and len(s.train) == 6
    write_table(
        root / "labels.csv", ["file", "label"], [[f"img{i}.png", ["Dairy product", "Egg"][i % 2]] for i in range(8)]
    )
    s = discover(root, val_split=0.25, seed=0)
    assert s.classes == ["Dairy product", "Egg"] and s.task == "single"  # not tags: "Dairy product" is one class


def test_validation_from_valid_csv_or_a_column(tmp_path):
    root = tmp_path / "d"
    for i in range(10):
        write_image(root / "train" / f"{i}.jpg", colour=(20 * i, 40, 40))
    rows = [[f"{i}.jpg", "ab"[i % 2]] for i in range(10)]
    write_table(root / "train.csv", ["image", "label"], rows[:6])
    write_table(root / "valid.csv", ["image", "label"], rows[6:])
    s = discover(root, seed=0)
    assert len(s.train) == 6 and len(s.val) == 4 and s.layout == "csv:train.csv"
    (root / "valid.csv").unlink()
    write_table(root / "train.csv", ["image", "label", "is_valid"], [r + [str(i >= 7)] for i, r in enumerate(rows)])
    s = discover(root, seed=0)
    assert len(s.train) == 7 and len(s.val) == 3
    write_table(
        root / "train.csv", ["image", "label", "split"], [r + [["train", "valid"][i % 2]] for i, r in enumerate(rows)]
    )
    assert len(discover(root, seed=0).val) == 5
    with pytest.raises(ImgclsError, match="drop --val-split"):
        discover(root, val_split=0.2, seed=0)


def test_unlabelled_test_csv_and_sample_submission(food, tmp_path):
    root = tmp_path / "k"
    (root).mkdir()
    for name in ("train.csv", "train_images", "test_images", "sample_submission.csv"):
        (root / name).symlink_to(food / "csv" / name)
    s = discover(root, val_split=0.25, seed=0)
    assert len(s.test) == 12 and not s.test_labeled and all(x.label == UNLABELED for x in s.test)


def test_a_kaggle_folder_without_its_csv_is_not_two_classes_of_folder_names(food, tmp_path, capsys):
    root = tmp_path / "k"
    root.mkdir()
    for name in ("train_images", "test_images"):
        (root / name).symlink_to(food / "csv" / name)
    argv = ["train", "--model", "attn_cnn", "--data", str(root), "--val-split", "0.2", "--out", str(tmp_path / "r")]
    one_line_error(capsys, argv, "named like splits, not classes")


def _bad(tmp_path, header, rows, name="train.csv"):
    root = tmp_path / "bad"
    for i in range(6):
        write_image(root / "images" / f"{i}.jpg")
    write_table(root / name, header, rows)
    return root


@pytest.mark.parametrize(
    "header, rows, expected",
    [
        (
            ["id", "label"],
            [[f"{i}", "ab"[i % 2]] for i in range(6)] + [["gone1", "a"], ["gone2", "b"]],
            "2 row(s) name files that are not in",
        ),
        (
            ["id", "label"],
            [[f"{i}", "ab"[i % 2]] for i in range(6)] + [["0", "b"]],
            "the same image listed with different labels: 0",
        ),
        (["id", "label"], [[f"{i}", "ab"[i % 2] if i else ""] for i in range(6)], "1 row(s) with an empty 'label'"),
        (
            ["name", "label"],
            [[f"x{i}", "ab"[i % 2]] for i in range(6)],
            "no column names image files (tried columns name, label",
        ),
        (
            ["id", "a", "b", "c"],
            [[f"{i}", i % 2, 1 - i % 2, 0] for i in range(6)],
            "class column(s) c have no positive",
        ),
        (["id", "label"], [[f"{i}", "a"] for i in range(6)], "only one class"),
    ],
)
def test_csv_errors_are_one_line(tmp_path, capsys, header, rows, expected):
    root = _bad(tmp_path, header, rows)
    argv = ["train", "--model", "attn_cnn", "--data", str(root), "--val-split", "0.3", "--out", str(tmp_path / "r")]
    one_line_error(capsys, argv, expected)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_skip_missing_trains_without_them_and_lists_them(tmp_path):
    from conftest import train_tiny

    rows = [[f"{i}", "ab"[i % 2]] for i in range(6)] + [["gone1", "a"]]
    root = _bad(tmp_path, ["id", "label"], rows)
    paths = train_tiny(root, tmp_path / "r", epochs=1, val_split=0.34, skip_missing=True, batch_size=4)
    listed = paths.bad_files.read_text()
    assert "gone1\tfile not found (listed in train.csv)" in listed


def test_csv_options_override_detection(tmp_path):
    root = tmp_path / "d"
    for i in range(6):
        write_image(root / "pics" / f"{i}.jpg")
    write_table(root / "meta.csv", ["a", "b", "kind", "colour"], [[i, f"{i}.jpg", "xy"[i % 2], "r"] for i in range(6)])
    opts = CsvOptions(labels=str(root / "meta.csv"), images="pics", image_col="b", label_col="kind")
    s = discover(root, val_split=0.34, seed=0, csv=opts)
    assert s.classes == ["x", "y"] and len(s.train) + len(s.val) == 6
    tags = CsvOptions(labels=str(root / "meta.csv"), images="pics", label_col="kind", label_sep=";")
    assert discover(root, val_split=0.34, seed=0, csv=tags).task == "multilabel"
    with pytest.raises(ImgclsError, match="no column 'nope'"):
        discover(root, val_split=0.34, csv=CsvOptions(labels=str(root / "meta.csv"), image_col="nope"))


def test_evaluate_reads_another_folder_through_the_csv_flags(tiny_run, demo_data, tmp_path, capsys):
    """A folder whose label CSV has a name and columns of its own: evaluate reads it with the same flags as
    train, every row is evaluated, and the numbers are those of the same images in the run's own layout."""
    import json
    import shutil

    from imgcls.commands.evaluate import evaluate

    names = (demo_data / "classes.txt").read_text().split()
    other, rows = tmp_path / "other", []
    (other / "pics").mkdir(parents=True)
    for i, f in enumerate(sorted((demo_data / "evaluation").glob("*.jpg"))):
        shutil.copy(f, other / "pics" / f"img{i}.jpg")
        rows.append([f"img{i}", names[int(f.name.split("_")[0])]])
    write_table(other / "my_labels.csv", ["file", "dish"], rows)
    flags = ["--labels", str(other / "my_labels.csv"), "--images", "pics", "--workers", "0"]
    one_line_error(capsys, ["evaluate", str(tiny_run), "--data", str(other), *flags, "--image-col", "id"], "'id'")
    assert main(["evaluate", str(tiny_run), "--data", str(other), *flags]) == 0
    got = json.loads((tiny_run / "eval" / "on-other" / "evaluation" / "metrics.json").read_text())
    own = evaluate(tiny_run, workers=0)
    assert got["images"] == own["images"] == len(rows)
    assert got["top1"] == pytest.approx(own["top1"]) and got["macro_f1"] == pytest.approx(own["macro_f1"])
    # One class of the run is a subset to evaluate, not a dataset to refuse.
    write_table(other / "my_labels.csv", ["file", "dish"], [r for r in rows if r[1] == names[0]])
    assert main(["evaluate", str(tiny_run), "--data", str(other), *flags]) == 0
