"""``imgcls auto`` on tiny generated data (32 px): the limit holds, a trial that would overrun it is stopped,
the winner is a run folder every command takes, a killed search resumes from its storage, two processes
share one study, and bad budgets, URLs and folders are one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imgcls

from conftest import wait_until

LIMIT = 16.0  # seconds: a few tiny trials, the winner's evaluation and the report
KILLED = 30.0  # the killed search and its rerun, together
SHARED = 30.0  # each of two processes on two cores (under make test's two workers, one core each)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return imgcls.demo_data(tmp_path_factory.mktemp("auto") / "data", per_class=6, size=32)


@pytest.fixture(scope="module")
def searched(tiny_data, tmp_path_factory):
    """One search whose first trial is planned far too long (its cost model says the trial is free and it
    may run 400 epochs): the budget has to stop it, and the search still ends in time with a winner."""
    import imgcls.commands.auto as auto

    patch = pytest.MonkeyPatch()
    patch.setattr(auto, "MAX_EPOCHS", {"head": 400, "last": 3, "full": 2})
    real = auto.predict_seconds
    patch.setattr(
        auto,
        "predict_seconds",
        lambda plan, arm, seen: (0.01, 0.001) if arm.finetune == "head" else real(plan, arm, seen),
    )
    out = tmp_path_factory.mktemp("auto") / "out"
    t0 = time.monotonic()
    try:
        result = imgcls.auto(tiny_data, time_limit=LIMIT, out=out, image_size=32, workers=0, batch_size=16)
    finally:
        patch.undo()
    return result, time.monotonic() - t0, out


def test_the_limit_holds_and_the_overrunning_trial_is_stopped(searched):
    result, wall, out = searched
    assert wall <= 1.1 * LIMIT, wall
    board = result.leaderboard
    first = board[board["trial"] == 0].iloc[0]
    assert first["max_epochs"] > first["epochs"] and first["stopped"].startswith("out of time")
    assert result.seconds <= 1.1 * LIMIT
    record = json.loads((out / "auto.json").read_text())
    assert record["invocations"][-1]["running"] is False and record["invocations"][-1]["seconds"] <= 1.1 * LIMIT


def test_every_trial_is_a_run_folder_and_the_winner_is_used_as_is(searched, tiny_data, tmp_path):
    from imgcls.core.rundir import folder_state

    result, _, out = searched
    started = result.leaderboard
    assert len(started) >= 1 and all(folder_state(Path(run)) == "run" for run in started["run"])
    assert not any((Path(run) / "eval").exists() for run in started["run"])  # only the winner is scored
    best = result.best
    assert best.path == out / "best" and (out / "best" / "eval" / "evaluation" / "metrics.json").is_file()
    assert result.held_out["split"] == "evaluation" and 0 <= result.held_out["value"] <= 1
    assert imgcls.evaluate(best.path, split="validation", workers=0)["images"] > 0
    exported = imgcls.export(best.path, out=tmp_path / "e")
    assert len(imgcls.load(exported["path"]).predict(sorted((tiny_data / "evaluation").glob("*.jpg"))[:3])) == 3
    page = (out / "report.html").read_text()
    assert "The search" in page and "Leaderboard" in page and (out / "leaderboard.csv").is_file()
    (out / "report.html").unlink()
    assert imgcls.rebuild_report(out) == out / "report.html" and "The search" in (out / "report.html").read_text()
    assert (out / "study.db").is_file()
    assert "imgcls auto" in result._repr_html_()


def _auto_argv(data: Path, out: Path, limit: float, *extra) -> list[str]:
    argv = [sys.executable, "-m", "imgcls", "auto", "--data", str(data), "--out", str(out), "--time-limit", str(limit)]
    return argv + ["--image-size", "32", "--workers", "0", "--batch-size", "16", *extra]


def test_a_killed_search_resumes_from_its_storage(tiny_data, tmp_path):
    import optuna

    out = tmp_path / "out"
    first = subprocess.Popen(
        _auto_argv(tiny_data, out, KILLED), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def second_trial_training() -> bool:
        assert first.poll() is None, first.stdout.read()[-3000:]
        return any((p / "metrics.csv").is_file() for p in (out / "trials").glob("0001-*"))

    wait_until(second_trial_training, timeout=60, what="the second trial's first epoch")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed = optuna.load_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}")
    running = [t.number for t in killed.get_trials() if t.state.name == "RUNNING"]
    assert running == [1]
    again = subprocess.run(_auto_argv(tiny_data, out, KILLED), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[trial 1] its process died: it runs again, from its last completed epoch" in again.stdout
    record = json.loads((out / "auto.json").read_text())
    runs = record["invocations"]
    assert len(runs) == 2 and sum(r["seconds"] for r in runs) <= 1.1 * KILLED + 6  # the second run had what was left
    study = optuna.load_study(study_name="out", storage=f"sqlite:///{out / 'study.db'}")
    retried = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == 1]
    assert len(retried) == 1 and retried[0].state.name in ("COMPLETE", "PRUNED")
    assert retried[0].user_attrs["run"] == str(
        (out / "trials").resolve() / next(p.name for p in (out / "trials").glob("0001-*"))
    )
    assert len([t for t in study.get_trials() if t.number == 0 and t.state.name == "COMPLETE"]) == 1  # not run again


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server (initdb + pg_ctl, as an unprivileged user when this runs as root): the
    storage several machines would share. Skipped where PostgreSQL or its driver is not installed."""
    import socket
    import tempfile

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    try:
        import psycopg  # noqa: F401 (SQLAlchemy 2.1 opens postgresql:// URLs with psycopg 3)
    except ImportError:
        found = []
    if not found:
        pytest.skip("no PostgreSQL server here (apt-get install postgresql; pip install 'psycopg[binary]')")
    bin_dir = found[-1].parent
    base = Path(tempfile.mkdtemp(prefix="imgcls-pg-"))
    base.chmod(0o777)
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    (base / "sock").mkdir(mode=0o777)
    (base / "sock").chmod(0o777)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(base / "data"), "-A", "trust", "-U", "imgcls"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {base / 'sock'} -c listen_addresses=''"
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "sock" / "log")]
    subprocess.run([*ctl, "-w", "-o", options, "start"], check=True, capture_output=True)
    try:
        subprocess.run(
            [str(bin_dir / "createdb"), "-h", str(base / "sock"), "-p", str(port), "-U", "imgcls", "study"], check=True
        )
        yield f"postgresql://imgcls@/study?host={base / 'sock'}&port={port}"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_two_processes_share_one_study(tiny_data, tmp_path, request, kind):
    import optuna

    url = (
        f"journal:///{tmp_path / 'shared' / 'study.log'}" if kind == "journal" else request.getfixturevalue("postgres")
    )
    out = tmp_path / "out"
    argv = _auto_argv(tiny_data, out, SHARED, "--storage", url, "--study", "shared")  # two on two cores: slower
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "shared" / "study.log")))
    else:
        storage = url
    trials = [
        t
        for t in optuna.load_study(study_name="shared", storage=storage).get_trials()
        if not t.user_attrs.get("skipped")
    ]
    ran = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    by_pid = {t.user_attrs["pid"] for t in ran}
    assert len(by_pid) == 2  # both processes ran trials
    assert len({t.number for t in ran}) == len(ran)  # none ran twice
    firsts = [json.dumps(t.params, sort_keys=True) for t in ran if t.system_attrs.get("fixed_params")]
    assert len(firsts) == len(set(firsts))  # each enqueued first setting ran once
    board = (out / "leaderboard.csv").read_text()
    assert all(f"\n{t.number}," in board for t in ran)  # one report, of the union


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--time-limit", "0"], "--time-limit: bad value 0 (a time limit must be more than 0 seconds)"),
        (["--time-limit", "-5"], "--time-limit: bad value -5 (expected a duration such as 90s"),
        (["--time-limit", "ten"], "--time-limit: bad value ten (expected a duration such as 90s"),
        ([], "give the search a budget: --time-limit 10m"),
        (["--time-limit", "1m", "--models", "nope"], "unknown model 'nope'"),
        (["--time-limit", "1m", "--lr", "0.1"], "unrecognized arguments: --lr 0.1"),
        (["--time-limit", "1m", "--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: cannot open it"),
        (
            ["--time-limit", "1m", "--storage", "postgresql://imgcls:secret@127.0.0.1:9/x"],
            "--storage postgresql://imgcls:***@127.0.0.1:9/x: cannot open it",
        ),
        (["--time-limit", "3s"], "--time-limit 3s cannot fit the cheapest useful trial: efficientnet_lite"),
    ],
)
def test_bad_budgets_urls_and_models_are_one_line(tiny_data, tmp_path, capsys, extra, message):
    from test_hostile import one_line_exit_2

    argv = ["auto", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--image-size", "32", *extra]
    line = one_line_exit_2(capsys, argv)
    assert message in line and "secret" not in line


def test_an_out_folder_of_other_files_or_another_search_is_refused(tiny_data, tmp_path, capsys):
    from test_hostile import one_line_exit_2

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["auto", "--data", str(tiny_data), "--time-limit", "1m", "--image-size", "32"]
    assert "holds files that are not an imgcls search" in one_line_exit_2(capsys, [*argv, "--out", str(mine)])
    other = tmp_path / "other"
    other.mkdir()
    (other / "auto.json").write_text(
        json.dumps({"kind": "imgcls-auto", "data": "/elsewhere", "study": "other", "invocations": []})
    )
    assert "holds another search (study 'other' of /elsewhere)" in one_line_exit_2(capsys, [*argv, "--out", str(other)])
    assert (mine / "notes.txt").read_text() == "mine" and sorted(os.listdir(other)) == ["auto.json"]
