"""Nothing lost, nothing crashes: bad images, killed runs, NaN losses, unsafe checkpoint files."""

import os
import pickle
import shutil

import pytest

from imgcls.cli import main
from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import read_metrics

from conftest import train_tiny


@pytest.fixture
def messy_data(demo_data, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "messy"
    shutil.copytree(demo_data, root)
    good = (root / "training" / "0_0.jpg").read_bytes()
    (root / "training" / "1_90.jpg").write_bytes(b"")
    (root / "training" / "2_91.jpg").write_bytes(good[: len(good) // 2])
    (root / "training" / "3_92.jpg").write_bytes(b"this is a text file")
    (root / "validation" / "4_93.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return root


def test_bad_files_are_skipped_listed_and_counted(messy_data, tmp_path, capsys):
    paths = train_tiny(messy_data, tmp_path / "run", epochs=1)
    listed = paths.bad_files.read_text().splitlines()
    assert len(listed) == 4
    reasons = dict(line.split("\t") for line in listed)
    assert "empty" in reasons[str(messy_data / "training" / "1_90.jpg")]
    assert "truncated" in reasons[str(messy_data / "training" / "2_91.jpg")]
    assert "not an image" in reasons[str(messy_data / "training" / "3_92.jpg")]
    import json

    assert json.loads(paths.summary.read_text())["train_images"] == 88  # 88 good of 91


def test_strict_turns_bad_files_into_exit_2(messy_data, tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "attn_cnn",
            "--data",
            str(messy_data),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--strict",
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "0",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "4 bad image file(s)" in err and "1_90.jpg" in err and "Traceback" not in err


def test_check_data_reports_and_caches(messy_data, capsys, monkeypatch):
    assert main(["check-data", str(messy_data)]) == 0
    out = capsys.readouterr().out
    assert "4 bad file(s)" in out and "1 empty" in out and "1 truncated" in out
    import imgcls.data.scan as scan

    calls = []
    monkeypatch.setattr(scan, "check_file", lambda p: calls.append(p))
    assert main(["check-data", str(messy_data), "--strict"]) == 2  # the same verdicts, from the cache
    assert calls == []


def test_a_file_that_breaks_after_the_scan_is_skipped(demo_data, tmp_path, monkeypatch):
    from imgcls.data.dataset import ImageDataset, collate_skip_bad
    from imgcls.data.layouts import discover
    from imgcls.data.transforms import build_eval_transform

    root = tmp_path / "d"
    shutil.copytree(demo_data, root)
    samples = discover(root).train[:4]
    ds = ImageDataset(samples, build_eval_transform(32))
    open(samples[1].path, "wb").close()  # changed mid-run
    batch = collate_skip_bad([ds[i] for i in range(4)])
    assert batch[0].shape[0] == 3


def test_same_seed_same_metrics(demo_data, tmp_path):
    a = read_metrics(train_tiny(demo_data, tmp_path / "a", augment="reference").metrics)
    b = read_metrics(train_tiny(demo_data, tmp_path / "b", augment="reference").metrics)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_best_checkpoint(demo_data, tmp_path, monkeypatch):
    paths = train_tiny(demo_data, tmp_path / "run", epochs=1)
    before = paths.best.read_bytes()
    import imgcls.engine.module as module

    original = module.ClassifierModule.forward
    monkeypatch.setattr(module.ClassifierModule, "forward", lambda self, x: original(self, x) * float("nan"))
    from imgcls.engine.train import resume_config, train

    with pytest.raises(ImgclsError, match=r"non-finite training loss .* epoch 2, step 1"):
        train(resume_config(paths.root, {"epochs": 2}), resume=True, progress=False)
    assert paths.best.read_bytes() == before
    assert [r["epoch"] for r in read_metrics(paths.metrics)] == [1]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/imgcls-pwned",))


def test_checkpoint_with_a_malicious_pickle_is_refused(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with open(run / "checkpoints" / "best.ckpt", "wb") as fh:
        pickle.dump({"state_dict": {}, "payload": _Evil()}, fh)
    if os.path.exists("/tmp/imgcls-pwned"):
        os.remove("/tmp/imgcls-pwned")
    code = main(["evaluate", str(run), "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err and "Traceback" not in err
    assert not os.path.exists("/tmp/imgcls-pwned")


def test_training_starts_with_the_heap_given_back(monkeypatch):
    """With imgcls's malloc thresholds freed memory stays in the heap; before a training forks its loader
    workers the heap is trimmed, so a comparison's later variants do not fork workers that each hold a
    copy of the earlier variants' gigabytes (the out-of-memory kill this guards against was measured)."""
    import numpy as np

    from imgcls.core.malloc import release_memory, tune_malloc

    if not tune_malloc():
        pytest.skip("no glibc malloc tuning on this platform")

    def rss_mb() -> float:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    release_memory()  # the heap as compact as it gets, whatever this process did before
    before = rss_mb()
    blocks = [np.ones(2**18) for _ in range(500)]  # 1 GB in 2 MB blocks, kept in the heap when freed
    del blocks
    kept = rss_mb()
    release_memory()
    assert kept - before > 500 and rss_mb() - before < 200


def test_trimmed_only_when_loader_workers_will_fork(demo_data, tmp_path, monkeypatch):
    import imgcls.engine.build
    import imgcls.engine.train

    class Trimmed(Exception):
        pass

    class Built(Exception):
        pass

    monkeypatch.setattr(imgcls.engine.train, "release_memory", lambda: (_ for _ in ()).throw(Trimmed()))
    monkeypatch.setattr(imgcls.engine.build, "build_module", lambda plan: (_ for _ in ()).throw(Built()))
    with pytest.raises(Trimmed):
        train_tiny(demo_data, tmp_path / "a", workers=1)
    with pytest.raises(Built):  # no worker to fork: the trim (0.4 s in a large process) is skipped
        train_tiny(demo_data, tmp_path / "b", workers=0)
