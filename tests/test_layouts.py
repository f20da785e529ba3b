from collections import Counter

import pytest

from imgcls.core.errors import ImgclsError
from imgcls.data.layouts import FOOD11_CLASSES, UNLABELED, discover, unlabeled_samples

from conftest import write_image


def make_flat(root, split, counts: dict[int, int], ext="jpg"):
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / split / f"{cls}_{i}.{ext}", seed=cls * 100 + i)


def make_folder(root, split, counts: dict[str, int]):
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / split / cls / f"img{i}.png", seed=i)


def test_imagefolder_splits(tmp_path):
    make_folder(tmp_path, "train", {"cat": 3, "dog": 2})
    make_folder(tmp_path, "val", {"cat": 1, "dog": 1})
    make_folder(tmp_path, "test", {"dog": 2})
    s = discover(tmp_path)
    assert s.layout == "imagefolder" and s.classes == ["cat", "dog"]
    assert Counter(x.label for x in s.train) == {0: 3, 1: 2}
    assert [x.label for x in s.test] == [1, 1] and s.test_labeled


def test_food11_flat_layout_gets_food11_names(tmp_path):
    counts = {i: 2 for i in range(11)}
    make_flat(tmp_path, "training", counts)
    make_flat(tmp_path, "validation", {0: 1, 10: 1})
    make_flat(tmp_path, "evaluation", {3: 2})
    s = discover(tmp_path)
    assert s.layout == "flat" and s.classes == FOOD11_CLASSES
    assert len(s.train) == 22 and {x.label for x in s.val} == {0, 10}
    assert s.test_labeled and {x.label for x in s.test} == {3}


def test_flat_layout_reads_classes_txt_and_mixed_extensions(tmp_path):
    make_flat(tmp_path, "training", {0: 2, 1: 2}, ext="png")
    make_flat(tmp_path, "validation", {0: 1, 1: 1}, ext="jpeg")
    (tmp_path / "classes.txt").write_text("apple\nbanana\n")
    assert discover(tmp_path).classes == ["apple", "banana"]


def test_flat_layout_other_count_gets_generic_names(tmp_path):
    make_flat(tmp_path, "train", {0: 1, 1: 1, 2: 1})
    make_flat(tmp_path, "valid", {2: 1})
    assert discover(tmp_path).classes == ["class_0", "class_1", "class_2"]


def test_unlabeled_test_split(tmp_path):
    make_flat(tmp_path, "training", {0: 2, 1: 2})
    make_flat(tmp_path, "validation", {0: 1, 1: 1})
    for i in range(3):
        write_image(tmp_path / "test" / f"{i:04d}.jpg", seed=i)
    s = discover(tmp_path)
    assert not s.test_labeled and len(s.test) == 3 and all(x.label == UNLABELED for x in s.test)


def test_single_root_with_val_split_is_stratified_and_seeded(tmp_path):
    make_folder(tmp_path, ".", {"a": 10, "b": 20})
    s = discover(tmp_path, val_split=0.2, seed=1)
    assert s.layout == "imagefolder+val-split"
    assert Counter(x.label for x in s.val) == {0: 2, 1: 4}
    assert Counter(x.label for x in s.train) == {0: 8, 1: 16}
    assert not {x.path for x in s.train} & {x.path for x in s.val}
    assert discover(tmp_path, val_split=0.2, seed=1).val == s.val
    assert discover(tmp_path, val_split=0.2, seed=2).val != s.val


def test_single_root_without_val_split_asks_for_it(tmp_path):
    make_folder(tmp_path, ".", {"a": 2, "b": 2})
    with pytest.raises(ImgclsError, match="--val-split"):
        discover(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(ImgclsError, match="not found"):
        discover(tmp_path / "nope")


def test_no_images(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "validation").mkdir()
    (tmp_path / "training" / "notes.txt").write_text("hi")
    with pytest.raises(ImgclsError, match="no images"):
        discover(tmp_path)


def test_missing_validation_split(tmp_path):
    make_flat(tmp_path, "training", {0: 1, 1: 1})
    with pytest.raises(ImgclsError, match="validation"):
        discover(tmp_path)


def test_validation_class_absent_from_training(tmp_path):
    make_folder(tmp_path, "train", {"cat": 2, "dog": 2})
    make_folder(tmp_path, "val", {"cat": 1, "fox": 1})
    with pytest.raises(ImgclsError, match="fox"):
        discover(tmp_path)


def test_flat_prefix_not_integer_lists_up_to_ten(tmp_path):
    make_flat(tmp_path, "training", {0: 1, 1: 1})
    for i in range(12):
        write_image(tmp_path / "training" / f"x{i:02d}_photo.jpg", seed=i)
    make_flat(tmp_path, "validation", {0: 1})
    with pytest.raises(ImgclsError) as err:
        discover(tmp_path)
    msg = str(err.value)
    assert "x00_photo.jpg" in msg and "x09_photo.jpg" in msg and "x10_photo.jpg" not in msg and "12 in all" in msg


def test_unlabeled_samples_from_files_and_folders(tmp_path):
    a = write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "sub" / "deeper" / "b.png")
    (tmp_path / "sub" / "readme.md").write_text("x")
    found = unlabeled_samples([str(a), str(tmp_path / "sub")])
    assert [p.path.split("/")[-1] for p in found] == ["a.jpg", "b.png"]
    with pytest.raises(ImgclsError, match="not found"):
        unlabeled_samples([str(tmp_path / "missing.jpg")])


def test_train_and_test_without_validation_carves_a_stratified_split(tmp_path):
    make_folder(tmp_path, "train", {"pie": 10, "ribs": 5})
    make_folder(tmp_path, "test", {"pie": 3, "ribs": 2})
    with pytest.raises(ImgclsError, match="--val-split 0.2"):
        discover(tmp_path)
    s = discover(tmp_path, val_split=0.2, seed=3)
    assert s.layout == "imagefolder+val-split" and s.classes == ["pie", "ribs"]
    assert Counter(x.label for x in s.val) == {0: 2, 1: 1} and len(s.train) == 12
    assert s.test_labeled and len(s.test) == 5  # test stays the held-out split
    assert discover(tmp_path, val_split=0.2, seed=3).val == s.val


def test_flat_train_and_evaluation_without_validation(tmp_path):
    make_flat(tmp_path, "training", {0: 4, 1: 4})
    make_flat(tmp_path, "evaluation", {0: 1, 1: 1})
    s = discover(tmp_path, val_split=0.25)
    assert s.layout == "flat+val-split" and len(s.val) == 2 and len(s.train) == 6 and len(s.test) == 2


def _food101(root, counts: dict[str, int], test_each: int = 1):
    lines = {"train": [], "test": []}
    for cls, n in counts.items():
        for i in range(n):
            write_image(root / "images" / cls / f"{100 + i}.jpg", seed=i)
            lines["test" if i < test_each else "train"].append(f"{cls}/{100 + i}")
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("\n".join(counts) + "\n")
    for split, rows in lines.items():
        (root / "meta" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def test_food101_layout(tmp_path):
    _food101(tmp_path, {"apple_pie": 6, "baklava": 6})
    with pytest.raises(ImgclsError, match="--val-split"):
        discover(tmp_path)
    s = discover(tmp_path, val_split=0.2)
    assert s.layout == "food101+val-split" and s.classes == ["apple_pie", "baklava"]
    assert len(s.train) + len(s.val) == 10 and len(s.test) == 2 and s.test_labeled
    (tmp_path / "meta" / "test.txt").write_text("apple_pie/999\n")
    with pytest.raises(ImgclsError, match="apple_pie/999"):
        discover(tmp_path, val_split=0.2)


def test_a_single_folder_of_class_folders_is_evaluated_whole(tmp_path):
    make_folder(tmp_path, ".", {"a": 2, "b": 3})
    s = discover(tmp_path, for_eval=True)
    assert s.test_labeled and len(s.test) == 5 and not s.train and not s.val


@pytest.mark.parametrize("name", ["50000000_9.jpg", "1234567890123456789012345678901234567890_1.jpg", "60_1.jpg"])
def test_implausible_flat_class_indices_are_refused(tmp_path, name):
    make_flat(tmp_path, "training", {0: 2, 1: 2, 2: 2})
    make_flat(tmp_path, "validation", {0: 1, 1: 1})
    write_image(tmp_path / "training" / name)
    with pytest.raises(ImgclsError, match="implausible class index") as err:
        discover(tmp_path)
    assert name in str(err.value)
