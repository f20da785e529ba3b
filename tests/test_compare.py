import csv
import json
import os
import shutil

import pytest

from imgcls.commands.compare import compare, run_state
from imgcls.core.config import resolve_config
from imgcls.core.errors import ImgclsError
from imgcls.core.rundir import RunPaths, read_metrics
from imgcls.report.build import build_report

SPECS = ["attn_cnn:num_heads=4", "vit_tiny:depth=1,patch_size=8"]


def _cfg(data, **kw):
    opts = dict(data=str(data), epochs=1, image_size=32, batch_size=16, workers=0, augment="light")
    opts.update(kw)
    return resolve_config(None, opts)


@pytest.fixture(scope="module")
def comparison(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "c"
    compare(_cfg(demo_data), SPECS, out, progress=False)
    return out


def test_compare_writes_sibling_runs_and_report(comparison):
    for name in ("attn_cnn-num_heads4", "vit_tiny-depth1-patch_size8"):
        paths = RunPaths(comparison / name)
        assert paths.best.is_file() and (paths.eval_dir / "evaluation" / "metrics.json").is_file()
        assert (paths.root / "inference.json").is_file()
    for name in ("report.html", "report.md", "summary.csv"):
        assert (comparison / name).is_file()


def test_report_numbers_equal_the_run_files(comparison):
    with open(comparison / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == SPECS
    html = (comparison / "report.html").read_text()
    md = (comparison / "report.md").read_text()
    for row in rows:
        run = comparison / row["variant"]
        summary = json.loads((run / "summary.json").read_text())
        metrics = read_metrics(run / "metrics.csv")
        heldout = json.loads((run / "eval" / "evaluation" / "metrics.json").read_text())
        inference = json.loads((run / "inference.json").read_text())
        assert float(row["best_val_acc"]) == summary["best_val_acc"] == max(r["val_acc"] for r in metrics)
        assert int(row["best_epoch"]) == summary["best_epoch"]
        assert float(row["train_seconds"]) == summary["train_seconds"]
        assert summary["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in metrics), abs=0.01)
        assert int(row["params"]) == summary["params"] and float(row["gflops"]) == summary["gflops"]
        assert float(row["heldout_acc"]) == heldout["top1"] and float(row["macro_f1"]) == heldout["macro_f1"]
        assert float(row["inference_ips"]) == inference["images_per_s"]
        for text in (html, md):
            assert f"{summary['best_val_acc']:.4f}" in text and f"{heldout['top1']:.4f}" in text
            assert f"{summary['params']:,}" in text and f"{summary['train_seconds']:.1f}" in text


def test_report_command_rebuilds_the_same_table(comparison, capsys):
    from imgcls.cli import main

    before = (comparison / "summary.csv").read_text()
    os.remove(comparison / "report.html")
    assert main(["report", str(comparison)]) == 0
    assert (comparison / "report.html").is_file() and (comparison / "summary.csv").read_text() == before


def test_finished_variants_are_not_retrained(comparison, demo_data, capsys):
    ckpts = {p: p.stat().st_mtime_ns for p in comparison.glob("*/checkpoints/*.ckpt")}
    compare(_cfg(demo_data), SPECS, comparison, progress=False)
    assert "already finished, not retrained" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in comparison.glob("*/checkpoints/*.ckpt")} == ckpts


def test_interrupted_variant_resumes(comparison, demo_data, tmp_path, capsys):
    out = tmp_path / "c"
    shutil.copytree(comparison, out)
    # A run killed after its first epoch: last.ckpt exists, summary says incomplete.
    run = RunPaths(out / "attn_cnn-num_heads4")
    summary = json.loads(run.summary.read_text())
    run.summary.write_text(json.dumps({**summary, "complete": False}))
    assert run_state(run, 2) == "interrupted"
    first = read_metrics(run.metrics)
    compare(_cfg(demo_data, epochs=2), SPECS[:1], out, progress=False)
    assert "resuming attn_cnn:num_heads=4" in capsys.readouterr().out
    rows = read_metrics(run.metrics)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == first[0]
    assert run_state(run, 2) == "done"


@pytest.mark.parametrize(
    "specs,match",
    [
        (["attn_cnn:heads"], "key=value"),
        (["nope"], "valid models"),
        (["attn_cnn", "attn_cnn"], "twice"),
        ([], "no models"),
    ],
)
def test_bad_specs_fail_before_training(demo_data, tmp_path, specs, match):
    with pytest.raises(ImgclsError, match=match):
        compare(_cfg(demo_data), specs, tmp_path / "x", progress=False)
    assert not any((tmp_path / "x").glob("*/checkpoints")) if (tmp_path / "x").exists() else True


def test_report_of_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ImgclsError, match="no finished run"):
        build_report(tmp_path)


def test_report_renders_in_a_real_browser(comparison, tmp_path):
    from browser import launch, require_browser

    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((comparison / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("""() => Array.from(document.images).map(
            i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}))""")
        thumbs = page.locator("figure.thumb img").count()
        explained = sum(1 for i in images if i["alt"].startswith("where "))
        assert len(images) - thumbs - explained == 3 + 2 * len(SPECS) and thumbs > 0 and explained == 2 * len(SPECS)
        assert all(i["ok"] for i in images), [i["alt"] for i in images if not i["ok"]]
        assert page.locator("table tbody tr").count() == len(SPECS)
        assert "Most accurate" in page.inner_text("ul.concl")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_changed_recipe_is_not_reused(demo_data, tmp_path):
    out = tmp_path / "c"
    specs = ["attn_cnn:num_heads=4"]
    compare(_cfg(demo_data), specs, out, progress=False)
    with pytest.raises(ImgclsError, match=r"--lr 0\.001 -> 0\.01.*--retrain"):
        compare(_cfg(demo_data, lr=0.01), specs, out, progress=False)
    compare(_cfg(demo_data, lr=0.01), specs, out, progress=False, retrain=True)
    from imgcls.core.config import load_run_config

    assert load_run_config(out / "attn_cnn-num_heads4" / "config.yaml").lr == 0.01
    compare(_cfg(demo_data, lr=0.01, workers=1), specs, out, progress=False)  # a resumable field: reused
