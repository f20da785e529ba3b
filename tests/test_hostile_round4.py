"""Hostile round 4 (issue 30), the High rows: exports tied to their weights, answers written as the data
labels them, single-label names with shared words, exclusions that match, averages over the labels present,
no overlapping splits, no overwritten files, no ids outside the data, no live formulas in CSVs."""

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_hostile import one_line_exit_2

from imgcls.cli import main
from imgcls.core.errors import ImgclsError

from conftest import train_tiny, wait_until, write_image

COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 220, 40)]


def csv_dataset(root: Path, labels: list[str], per_class: int = 6, column: str = "label", size=(32, 32)) -> Path:
    """``root/train.csv`` (id,<column>,is_valid) + ``root/train_images/``: one colour per label."""
    rows = []
    for k, label in enumerate(labels):
        for n in range(per_class):
            name = f"img_{k}_{n}"
            write_image(root / "train_images" / f"{name}.jpg", COLOURS[k % len(COLOURS)], size=size, seed=k * 100 + n)
            rows.append([name, label, "1" if n < 2 else "0"])
    with open(root / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", column, "is_valid"], *rows])
    return root


def perturb_best(run: Path) -> None:
    """What a resumed run that found a better epoch leaves: other weights in best.ckpt."""
    best = run / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=True)
    key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][key] = state["state_dict"][key] + 0.05
    torch.save(state, best)


# -- 1. exports tied to their weights -----------------------------------------------------------------


@pytest.fixture
def int8_run(tiny_run, tmp_path, monkeypatch):
    import imgcls.commands.quantize as q
    from imgcls.commands.export import export

    monkeypatch.setattr(q, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(q, "MAX_DROP", 1.0)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "eval"))
    export(run, "onnx", quantize="int8")
    return run


def test_an_int8_export_older_than_the_checkpoint_is_refused_not_run(int8_run, capsys):
    from imgcls.engine.predictor import load_predictor

    assert load_predictor(int8_run, engine="int8").run.file.endswith("model.int8.onnx")
    perturb_best(int8_run)  # trained on since the export
    line = one_line_exit_2(capsys, ["evaluate", str(int8_run), "--engine", "int8"])
    assert "earlier checkpoints/best.ckpt" in line and "--quantize int8" in line
    assert not (int8_run / "eval").exists() and not (int8_run / "export" / "eval").exists()  # nothing written
    with pytest.raises(ImgclsError, match="earlier"):  # what serve --engine int8 loads
        load_predictor(int8_run, engine="int8")


def test_int8_evaluation_goes_beside_the_export_not_over_the_checkpoints(int8_run):
    from imgcls.commands.evaluate import evaluate

    evaluate(int8_run, engine="int8", workers=0)
    assert (int8_run / "export" / "eval" / "model.int8" / "evaluation" / "metrics.json").is_file()
    assert not (int8_run / "eval" / "evaluation").exists()


def test_an_export_copied_in_from_another_run_is_refused(int8_run, tmp_path, demo_data):
    from imgcls.commands.export import export
    from imgcls.engine.predictor import load_predictor

    other = train_tiny(demo_data, tmp_path / "other", epochs=1, seed=7).root  # the same classes
    export(other, "onnx")
    shutil.copy(other / "export" / "model.onnx", int8_run / "export" / "model.onnx")
    with pytest.raises(ImgclsError, match="not the file its sidecar"):
        load_predictor(int8_run / "export" / "model.onnx")
    shutil.copy(other / "export" / "model.onnx", int8_run / "export" / "model.int8.onnx")
    with pytest.raises(ImgclsError, match="not the file its sidecar"):
        load_predictor(int8_run, engine="int8")
    # The run itself still answers, from its checkpoint (the copied export is passed over).
    assert load_predictor(int8_run).run.file != str(int8_run / "export" / "model.onnx")


def test_a_copied_run_with_a_stale_export_runs_its_checkpoint(tiny_run, tmp_path):
    from imgcls.commands.export import export
    from imgcls.engine.predictor import load_predictor

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export", "eval"))
    export(run, "onnx")
    perturb_best(run)
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, copy_function=shutil.copy)  # cp -r: new dates, the export copied last
    os.utime(copy / "export" / "model.onnx")
    assert load_predictor(copy).run.file != str(copy / "export" / "model.onnx")
    with pytest.raises(ImgclsError, match="earlier checkpoints/best.ckpt"):
        load_predictor(copy / "export" / "model.onnx")


def test_serve_says_which_engine_and_file_it_runs(int8_run):
    from fastapi.testclient import TestClient

    from imgcls.commands.serve.app import create_app
    from imgcls.engine.predictor import load_predictor

    info = TestClient(create_app(load_predictor(int8_run, engine="int8"))).get("/model").json()
    assert info["file"].endswith("model.int8.onnx") and info["int8"] is True


# -- 2. predict writes the label ----------------------------------------------------------------------


def test_predict_writes_the_label_not_the_index(tmp_path):
    data = csv_dataset(tmp_path / "d", ["3", "9", "17", "250"])
    run = train_tiny(data, tmp_path / "r", epochs=1).root
    assert json.loads((run / "classes.json").read_text()) == ["3", "9", "17", "250"]
    assert main(["predict", str(run), str(data / "train_images"), "--topk", "1", "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert rows and all(r["Category"] == r["top1_class"] for r in rows)


def test_predict_on_a_flat_layout_still_writes_the_index(tiny_run, demo_data, tmp_path):
    assert (
        main(["predict", str(tiny_run), str(demo_data / "evaluation"), "--topk", "1", "--out", str(tmp_path / "p.csv")])
        == 0
    )
    classes = json.loads((tiny_run / "classes.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert all(classes[int(r["Category"])] == r["top1_class"] for r in rows)


# -- 3. class names with shared words -----------------------------------------------------------------


def test_class_names_with_shared_words_are_single_label(tmp_path):
    from imgcls.data.csv_layout import CsvOptions
    from imgcls.data.layouts import discover

    data = csv_dataset(tmp_path / "d", ["apple pie", "apple", "cherry pie", "cherry"])
    found = discover(data)
    assert found.task == "single" and found.classes == ["apple", "apple pie", "cherry", "cherry pie"]
    assert discover(data, csv=CsvOptions(task="single")).classes == found.classes
    tags = discover(data, csv=CsvOptions(label_sep=" "))  # the user says they are tags
    assert tags.task == "multilabel" and tags.classes == ["apple", "cherry", "pie"]


# -- 4. --exclude matches however the path is written --------------------------------------------------


@pytest.mark.parametrize("form", ["padded header", "absolute", "dot-dot", "backslashes"])
def test_exclude_matches_paths_however_written(tmp_path, monkeypatch, form):
    from imgcls.data.edits import apply_edits
    from imgcls.data.layouts import discover

    data = csv_dataset(tmp_path / "d", ["a", "b"])
    monkeypatch.chdir(tmp_path)
    splits = discover("d")  # a relative --data
    victim = "train_images/img_0_4.jpg"
    value = {
        "padded header": victim,
        "absolute": str((data / victim).resolve()),
        "dot-dot": "train_images/../train_images/img_0_4.jpg",
        "backslashes": victim.replace("/", "\\"),
    }[form]
    header = " path " if form == "padded header" else "path"
    (tmp_path / "x.csv").write_text(f"{header},given\n {value} ,a\n")
    edited, edits = apply_edits(splits, exclude=str(tmp_path / "x.csv"), relabel=None)
    assert len(edited.train) == len(splits.train) - 1 and edits == [[victim, "exclude", "a", ""]]


# -- 5. multi-label averages over the labels present ---------------------------------------------------


def test_map_and_f1_average_the_labels_present():
    from imgcls.commands.evaluate_multilabel import multilabel_metrics
    from imgcls.engine.label_metrics import PresentLabelsAP

    probs = torch.tensor([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.7, 0.6, 0.2], [0.1, 0.3, 0.3]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # label 2: no positive
    m = multilabel_metrics(probs, targets, (probs >= 0.5).long())
    assert m["absent"] == [2] and m["mAP"] == pytest.approx((m["ap"][0] + m["ap"][1]) / 2)
    assert m["mAP"] == pytest.approx(1.0) and m["f1_macro"] == pytest.approx(1.0)
    metric = PresentLabelsAP(3)
    metric.update(probs, targets)
    assert float(metric.compute()) == pytest.approx(1.0)  # val_mAP, what best.ckpt is chosen by


def test_evaluate_names_the_labels_without_positives(tmp_path, capsys):
    data = tmp_path / "d"
    rows = []
    for n in range(12):
        tags = ["red", "green"][n % 2] + (" blue" if n in (0, 1) else "")  # blue: training only
        write_image(data / "train_images" / f"t{n}.jpg", COLOURS[n % 2], seed=n)
        rows.append([f"t{n}", tags, "1" if n >= 8 else "0"])
    with open(data / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "tags", "is_valid"], *rows])
    run = train_tiny(data, tmp_path / "r", epochs=1).root
    assert main(["evaluate", str(run), "--split", "validation", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "eval" / "validation" / "metrics.json").read_text())
    assert metrics["labels_without_positives"] == ["blue"] and metrics["labels_present"] == 2
    assert "1 have none: blue" in out
    ap = {r["class"]: r["ap"] for r in metrics["per_label"]}
    assert ap["blue"] is None and metrics["mAP"] == pytest.approx((ap["red"] + ap["green"]) / 2)


# -- 6. overlapping splits -----------------------------------------------------------------------------


def test_a_valid_csv_repeating_training_images_is_refused(tmp_path):
    from imgcls.data.layouts import discover

    data = csv_dataset(tmp_path / "d", ["a", "b"])
    table = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in table) + "\n")  # no is_valid
    (data / "valid.csv").write_text("id,label\nimg_0_1,a\nimg_1_1,b\n")
    with pytest.raises(ImgclsError, match=r"2 image\(s\) are in two splits: .*img_0_1.jpg \(train and val\)"):
        discover(data)


# -- 7. check-data never overwrites ------------------------------------------------------------------


def test_check_data_refuses_a_folder_of_other_files(tmp_path, capsys, demo_data):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my report")
    line = one_line_exit_2(capsys, ["check-data", str(demo_data), "--outliers", "--out", str(mine)])
    assert "files that check-data did not write" in line and "--force" in line
    assert (mine / "report.html").read_text() == "my report" and sorted(os.listdir(mine)) == ["report.html"]


def test_check_data_never_writes_into_a_run_folder(tiny_run, capsys):
    before = (tiny_run / "summary.json").read_text()
    line = one_line_exit_2(capsys, ["check-data", str(tiny_run), "--outliers", "--out", str(tiny_run), "--force"])
    assert "is a run folder" in line and (tiny_run / "summary.json").read_text() == before


def test_two_datasets_of_one_name_get_their_own_check_folders(tmp_path, monkeypatch):
    from imgcls.commands.check_data import output_folder

    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "x" / "food", tmp_path / "y" / "food"
    first = output_folder(a, None)
    assert first.name == "check-food"
    first.mkdir()
    (first / "summary.json").write_text(
        json.dumps({"kind": "check-data", "data": str(a.resolve()), "layout": "x", "images": 1})
    )
    assert output_folder(a, None) == first  # its own folder again
    second = output_folder(b, None)
    assert second != first and second.name.startswith("check-food-")
    with pytest.raises(ImgclsError, match=f"a check of {a.resolve()}"):
        output_folder(b, str(first))


# -- 8. export and predict never overwrite a user's files -------------------------------------------


def test_export_refuses_a_users_model_files(tiny_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_bytes(b"my own model")
    (mine / "model.json").write_text('{"mine": true}')
    line = one_line_exit_2(capsys, ["export", str(tiny_run), "--out", str(mine)])
    assert "model.onnx, model.json that imgcls export did not write" in line
    assert (mine / "model.onnx").read_bytes() == b"my own model" and (
        mine / "model.json"
    ).read_text() == '{"mine": true}'
    assert main(["export", str(tiny_run), "--out", str(mine), "--force"]) == 0
    assert main(["export", str(tiny_run), "--out", str(mine)]) == 0  # its own export: replaced freely


def test_predict_never_writes_over_its_inputs(tiny_run, demo_data, tmp_path, capsys):
    images = tmp_path / "imgs"
    shutil.copytree(demo_data / "evaluation", images)
    photo = sorted(images.iterdir())[0]
    data = photo.read_bytes()
    line = one_line_exit_2(capsys, ["predict", str(tiny_run), str(images), "--out", str(photo), "--force"])
    assert "is one of the inputs" in line and photo.read_bytes() == data
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("Id,Category\n" + "".join(f"{p.stem},0\n" for p in sorted(images.iterdir())))
    text = sample.read_text()
    line = one_line_exit_2(
        capsys, ["predict", str(tiny_run), str(images), "--submission", str(sample), "--out", str(sample)]
    )
    assert "is one of the inputs" in line and sample.read_text() == text
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    line = one_line_exit_2(capsys, ["predict", str(tiny_run), str(images), "--out", str(notes)])
    assert "not a predictions CSV" in line and notes.read_text() == "keep me"
    assert main(["predict", str(tiny_run), str(images), "--out", str(tmp_path / "p.csv")]) == 0
    assert main(["predict", str(tiny_run), str(images), "--out", str(tmp_path / "p.csv")]) == 0  # its own file again


# -- 9. ids outside the data folder -----------------------------------------------------------------


@pytest.mark.parametrize("form", ["dot-dot", "absolute"])
def test_label_csv_ids_outside_the_data_are_refused(tmp_path, capsys, form):
    from imgcls.data.csv_layout import CsvOptions
    from imgcls.data.layouts import discover

    data = csv_dataset(tmp_path / "data", ["a", "b"])
    secret = write_image(tmp_path / "outside" / "secret.jpg", (1, 2, 3))
    ref = "../../outside/secret.jpg" if form == "dot-dot" else str(secret)
    with open(data / "train.csv", "a") as fh:
        fh.write(f"{ref},a,0\n")
    with pytest.raises(ImgclsError, match=r"1 image\(s\) lie outside .*secret.jpg.*--allow-outside-data"):
        discover(data)
    line = one_line_exit_2(capsys, ["check-data", str(data), "--outliers", "--out", str(tmp_path / "c")])
    assert "outside" in line and not (tmp_path / "c").exists()  # no report embeds the outside photo
    allowed = discover(data, csv=CsvOptions(allow_outside=True))
    assert str(secret) in {os.path.normpath(s.path) for s in allowed.train + allowed.val}


def test_etc_passwd_in_a_label_csv_is_never_opened(tmp_path, capsys):
    data = csv_dataset(tmp_path / "data", ["a", "b"])
    with open(data / "train.csv", "a") as fh:
        fh.write("/etc/passwd,a,0\n")
    line = one_line_exit_2(capsys, ["check-data", str(data)])
    assert "/etc/passwd" in line and "outside" in line


def test_an_edited_splits_csv_cannot_reach_outside(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(run / "splits.csv", "a") as fh:
        fh.write("test,../../../../../../etc/passwd,0\n")
    line = one_line_exit_2(capsys, ["evaluate", str(run)])
    assert "outside" in line and "splits.csv" in line


# -- 10. no live formulas in the CSVs imgcls writes ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ['=HYPERLINK("x")', "+1+2", "-cmd", "@SUM(A1)", "\tx", "'=already", "''+x", "-1", "3.5e-4", "-inf", "plain", "a=b"],
)
def test_csv_cells_are_neutralised_and_read_back(tmp_path, value):
    from imgcls.core.tables import escape_cell, read_table, write_csv

    write_csv(tmp_path / "t.csv", ["path", "given"], [[value, value]])
    raw = list(csv.reader(open(tmp_path / "t.csv", newline="")))[1]
    dangerous = value[:1] in "=+-@\t" and escape_cell(value) != value
    assert raw[0] == ("'" + value if dangerous or value.startswith("'") else value)
    assert raw[0][:1] not in "=+@\t" and not (raw[0].startswith("-") and escape_cell(value) != value)
    assert read_table(tmp_path / "t.csv", ours=True, exact=True).rows == [{"path": value, "given": value}]


def test_a_class_named_like_a_formula_is_escaped_in_every_run_csv(tmp_path):
    data = tmp_path / "d"
    for name, colour in (("=cmd|' -C calc'!A0", (200, 30, 30)), ("+plus", (30, 200, 30))):
        for n in range(6):
            write_image(data / "train" / name / f"@{n}.jpg", colour, seed=n)
    run = train_tiny(data, tmp_path / "r", epochs=1, val_split=0.34).root
    assert main(["evaluate", str(run), "--split", "validation", "--workers", "0"]) == 0
    tables = list(run.glob("*.csv")) + list((run / "eval").rglob("*.csv"))
    assert {"per_class.csv", "predictions.csv", "confusion_matrix.csv"} <= {t.name for t in tables}
    for table in tables:
        for row in csv.reader(open(table, newline="")):
            assert not any(cell[:1] in ("=", "+", "@") for cell in row), (table.name, row)
    from imgcls.plan import open_saved_run

    splits = open_saved_run(run, checkpoint="last").splits()  # splits.csv reads back to the same files
    assert {Path(s.path).name for s in splits.train + splits.val} == {f"@{n}.jpg" for n in range(6)}


# -- Medium rows fixed with the CSV reader ---------------------------------------------------------


def test_a_row_longer_than_the_header_names_its_line(tmp_path, capsys):
    data = csv_dataset(tmp_path / "d", ["a", "b"])
    with open(data / "train.csv", "a") as fh:
        fh.write("img_0_0,a,0,surplus\n")
    line = one_line_exit_2(capsys, ["check-data", str(data)])
    assert "train.csv line 14: 4 fields, but the header has 3" in line


def test_short_rows_in_exclude_and_relabel_lists(tmp_path):
    from imgcls.data.edits import apply_edits
    from imgcls.data.layouts import discover

    data = csv_dataset(tmp_path / "d", ["a", "b"])
    (tmp_path / "x.csv").write_text("path,given,suggested\ntrain_images/img_0_4.jpg\n")
    edited, _ = apply_edits(discover(data), exclude=str(tmp_path / "x.csv"), relabel=None)
    assert len(edited.train) == 7
    (tmp_path / "r.csv").write_text("path,given,suggested\ntrain_images/img_0_4.jpg,a,b\ntrain_images/img_0_5.jpg\n")
    with pytest.raises(ImgclsError, match="r.csv line 3: no suggested label for train_images/img_0_5.jpg"):
        apply_edits(discover(data), exclude=None, relabel=str(tmp_path / "r.csv"))


def test_an_exclusion_that_empties_validation_is_refused_before_training(tmp_path, capsys):
    data = csv_dataset(tmp_path / "d", ["a", "b"])
    (tmp_path / "x.csv").write_text(
        "path\n" + "".join(f"train_images/img_{k}_{n}.jpg\n" for k in (0, 1) for n in (0, 1))
    )
    line = one_line_exit_2(
        capsys,
        [
            "train",
            "--model",
            "attn_cnn",
            "--data",
            str(data),
            "--exclude",
            str(tmp_path / "x.csv"),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert "leaves no validation image" in line and not (tmp_path / "r").exists()


def test_an_immediate_resume_after_kill_9_is_not_refused(demo_data, tmp_path):
    """Loader workers outlive a kill -9 of the training by seconds; they must not hold the run's lock."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "r"
    argv = [sys.executable, "-m", "imgcls", "train", "--model", "attn_cnn", "--data", str(demo_data)]
    argv += ["--epochs", "500", "--image-size", "32", "--workers", "1", "--out", str(run)]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def one_epoch() -> bool:
        assert first.poll() is None, first.stderr.read()[-2000:]
        return (run / "checkpoints" / "last.ckpt").is_file() and "\n1," in _text(run / "metrics.csv")

    wait_until(one_epoch, timeout=300, what="the first epoch")
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "imgcls", "train", "--resume", str(run), "--epochs", "2", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0 and "another imgcls process" not in resumed.stderr, resumed.stderr[-2000:]


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
