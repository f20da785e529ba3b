"""check-data's label issues, duplicates and outliers on generated images, its outputs, and acting on
them (train --exclude / --relabel)."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imgcls.cli import main

from conftest import train_tiny, write_image

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220)]


def photo(path, c: int, seed: int) -> None:
    """A distinct picture of class ``c``: a random demo shape and clutter, tinted with the class colour."""
    from imgcls.data.demo import render

    rng = np.random.default_rng(seed)
    base = np.asarray(render(int(rng.integers(11)), 64, rng), dtype=np.float32)
    tinted = 0.45 * base + 0.55 * np.array(COLOURS[c], dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tinted.clip(0, 255).astype(np.uint8)).save(path, quality=92)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """3 colour classes; one red photo filed as green (a flipped label), a test photo that is a resized,
    re-encoded and cropped copy of a training photo (leakage), and the same pixels as JPEG and PNG."""
    root = tmp_path_factory.mktemp("check") / "data"
    for split, n in (("train", 14), ("test", 4)):
        for c in range(len(COLOURS)):
            for i in range(n):
                photo(
                    root / split / f"c{c}" / f"{split}{c}_{i}.jpg", c, seed=100 * c + i + (50 if split == "test" else 0)
                )
    photo(root / "train" / "c1" / "flipped.jpg", 0, seed=999)  # the flipped label: a red picture filed as green
    # Leakage: a training photo, resized + cropped + re-encoded, in test.
    with Image.open(root / "train" / "c2" / "train2_3.jpg") as im:
        im.crop((2, 2, 62, 62)).save(root / "test" / "c2" / "copy.png")  # lightly cropped
    # Exact duplicate across formats: a JPEG's decoded pixels saved as PNG.
    with Image.open(root / "train" / "c0" / "train0_5.jpg") as im:
        im.convert("RGB").save(root / "train" / "c0" / "same_pixels.png")
    return root


@pytest.fixture(scope="module")
def checked(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "report"
    # train/ + test/ and no validation split: nothing is trained, so none is asked for (was: "pass --val-split").
    argv = ["check-data", str(planted), "--label-issues", "--duplicates", "--outliers"]
    assert main(argv + ["--image-size", "64", "--out", str(out), "--workers", "0"]) == 0
    return out


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_flipped_label_ranks_first(checked):
    issues = rows(checked / "label_issues.csv")
    assert list(issues[0]) == ["path", "given", "suggested", "score"]
    assert issues[0]["path"] == "train/c1/flipped.jpg" and issues[0]["given"] == "c1" and issues[0]["suggested"] == "c0"
    quality = rows(checked / "label_quality.csv")
    assert len(quality) == 44 and quality[0]["path"] == "train/c1/flipped.jpg"  # every training + validation image
    noise = {r["class"]: float(r["estimated_noise_rate"]) for r in rows(checked / "class_noise.csv")}
    assert list(noise) == ["c0", "c1", "c2"] and all(0 <= v <= 1 for v in noise.values()) and noise["c1"] > 0


def test_duplicates_found_and_named(checked):
    pairs = rows(checked / "duplicates.csv")
    assert list(pairs[0]) == ["path_a", "path_b", "similarity", "kind", "splits"]
    leak = [p for p in pairs if {p["path_a"], p["path_b"]} == {"train/c2/train2_3.jpg", "test/c2/copy.png"}]
    assert leak and leak[0]["kind"] == "near" and "leakage" in leak[0]["splits"]
    exact = [p for p in pairs if p["kind"] == "exact"]
    assert [{p["path_a"], p["path_b"]} for p in exact] == [{"train/c0/train0_5.jpg", "train/c0/same_pixels.png"}]
    assert float(exact[0]["similarity"]) == 1.0
    # Different photos of the same class are not duplicates.
    assert not [p for p in pairs if p["kind"] == "near" and "copy.png" not in p["path_a"] + p["path_b"]]


def test_outliers_counts_summary_and_report(checked, planted):
    assert list(rows(checked / "outliers.csv")[0] if rows(checked / "outliers.csv") else {}) in (
        [],
        ["path", "split", "label", "neighbour_similarity", "z"],
    )
    counts = rows(checked / "class_counts.csv")
    assert [r["class"] for r in counts] == ["c0", "c1", "c2"] and int(counts[1]["test"]) == 4
    summary = json.loads((checked / "summary.json").read_text())
    assert summary["label_issues"]["flagged"] >= 1 and summary["duplicates"]["leaks"] >= 1
    assert 0.5 < summary["label_issues"]["probe_accuracy"] <= 1.0  # how far to trust the flags
    page = (checked / "report.html").read_text()
    assert "data:image/jpeg;base64," in page and "flipped.jpg" in page and "Duplicates" in page
    assert "out-of-fold accuracy is" in page
    assert not list(planted.rglob("report.html"))  # nothing written into the data folder


def test_one_folder_of_class_folders_is_checked_as_training_images(planted, tmp_path):
    # No split folders and no --val-split: its images are what a training would learn from.
    out = tmp_path / "report"
    argv = ["check-data", str(planted / "train"), "--label-issues", "--folds", "3", "--image-size", "32"]
    assert main(argv + ["--out", str(out), "--workers", "0"]) == 0
    scored = rows(out / "label_quality.csv")
    assert len(scored) == sum(1 for p in (planted / "train").rglob("*") if p.is_file())


def test_default_out_and_refusals(planted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert (
        main(["check-data", str(planted), "--val-split", "0.2", "--outliers", "--image-size", "32", "--workers", "0"])
        == 0
    )
    assert (tmp_path / "check-data" / "outliers.csv").is_file()
    capsys.readouterr()
    for argv, message in (
        (["--outliers", "--out", str(planted / "inside")], "inside the data folder"),
        (["--label-issues", "--folds", "1"], "--folds must be between 2 and 20"),
        (["--duplicates", "--near", "2"], "--near must be between"),
    ):
        assert main(["check-data", str(planted), "--val-split", "0.2", "--image-size", "32", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["unlabelled", "one class", "empty"])
def test_bad_input_is_one_line(tmp_path, capsys, case):
    root = tmp_path / "d"
    if case == "unlabelled":
        for i in range(4):
            write_image(root / "training" / f"img{i}.jpg")
        argv = ["check-data", str(root), "--val-split", "0.25", "--label-issues"]
        message = "do not start with an integer"  # unlabelled flat files: no class to read
    elif case == "one class":
        for i in range(4):
            write_image(root / "a" / f"{i}.jpg", seed=i)
        argv = ["check-data", str(root), "--val-split", "0.25", "--label-issues"]
        message = "one class"
    else:
        root.mkdir()
        argv = ["check-data", str(root)]
        message = "no images found"
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_check_data_exits_2_when_every_file_is_bad(tmp_path, capsys):
    root = tmp_path / "d"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            (root / split / c / "x.jpg").write_bytes(b"not a jpeg")
    assert main(["check-data", str(root)]) == 2
    assert "none of the 4 images" in capsys.readouterr().err


def test_exclude_and_relabel_act_on_training(planted, checked, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(planted, data)
    relabel = tmp_path / "fix.csv"
    with open(relabel, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "suggested"], ["train/c1/flipped.jpg", "c0"]])
    paths = train_tiny(
        data, tmp_path / "r", val_split=0.2, epochs=1, relabel=str(relabel), exclude=str(checked / "duplicates.csv")
    )
    recorded = {r["path"]: r for r in rows(paths.splits)}
    assert recorded["train/c1/flipped.jpg"]["label"] == "0"  # relabelled (classes c0, c1, c2), files untouched
    assert (data / "train" / "c1" / "flipped.jpg").is_file()
    # duplicates.csv has no path column: its path_b (the second image of each pair) is excluded.
    assert "test/c2/copy.png" not in recorded
    assert len({"train/c0/same_pixels.png", "train/c0/train0_5.jpg"} & set(recorded)) == 1
    edits = rows(paths.root / "data_edits.csv")
    assert {(e["path"], e["action"]) for e in edits} >= {
        ("train/c1/flipped.jpg", "relabel"),
        ("test/c2/copy.png", "exclude"),
    }
    summary = json.loads(paths.summary.read_text())
    assert summary["relabelled_images"] == 1 and summary["excluded_images"] >= 2


def test_label_issues_on_multilabel_csv_data(tmp_path):
    """Multi-label data (a tags column) goes through cleanlab's multi-label API."""
    from test_csv_layout import make_food, variants

    data = variants(make_food(tmp_path / "food", per_class=(12, 2)), tmp_path / "v", "multilabel") / "multilabel"
    out = tmp_path / "o"
    argv = ["check-data", str(data), "--val-split", "0.25", "--label-issues", "--image-size", "32"]
    assert main(argv + ["--out", str(out), "--workers", "0"]) == 0
    quality = rows(out / "label_quality.csv")
    names = {"apple_pie", "baklava", "beef_tartare"}
    assert quality and all(set(r["given"].split()) <= names and set(r["suggested"].split()) <= names for r in quality)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "multilabel" and 0.0 < summary["label_issues"]["probe_mAP"] <= 1.0
