"""``imgcls auto``: the best classifier for these photos within a wall-clock budget, on this machine.

The search is an Optuna study that lives in its storage (SQLite in ``OUT/study.db`` by default, or any
``--storage`` URL several processes or machines share): each process asks the study for a trial, trains it
as a normal run folder under ``OUT/trials/``, reports every epoch's validation score to Optuna's pruner
(``optuna_integration``'s Lightning callback; a trial far behind the others at the same epoch stops there)
and tells the study what it reached. What a trial varies: the backbone (EfficientNet-Lite0/1/2 with their
offline ImageNet weights, and ``--models``), how much of it trains (head, last:2, last:3 or full), the
cached augmented views of its frozen part, and the learning rate; how many epochs it gets follows from
the budget.

The budget is the command's wall clock, from its start to the winner's report. Before any trial the
cost of each backbone is measured here (``engine/cost.py``) and a trial starts only when its predicted
time fits what is left; once an arm (backbone, cut, views) has run, its measured times replace the
estimate. A trial that runs long is stopped between epochs when the next one would not fit, and inside an
extraction or an epoch when the time is out. The study starts from a few settings measured to do well on
real photos (docs/BENCHMARKS.md), cheapest first, then Optuna's TPE sampler proposes the rest.

At the end the best trial by validation (never the held-out split) becomes ``OUT/best`` (a run folder:
evaluate, predict, export and serve take it as is); the held-out split is scored once, for it; the report
is the comparison report of the best trials plus the search (every trial on the accuracy-against-time
plane, the pruned ones, the leaderboard).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from imgcls.core.config import TrainConfig
from imgcls.core.errors import ImgclsError
from imgcls.core.files import read_json, write_json

DEFAULT_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
CUTS = ("head", "last:2", "last:3", "full")
VIEWS = (1, 2, 4)
LR = (1e-4, 3e-3)
MAX_EPOCHS = {"head": 10, "last": 6, "full": 4}
# The study's first trials, before its sampler has anything to learn from: what measured best for its time
# on real photos (food5 and five other Food-101 classes, docs/BENCHMARKS.md). The cheapest first (a result
# within seconds for a short budget), then the stronger backbones' last blocks from cached views, which
# led both sets, then a full fine-tune for long budgets.
FIRST = (
    {"model": "efficientnet_lite0", "finetune": "head", "views": 1, "lr": 1e-3},
    {"model": "efficientnet_lite2", "finetune": "last:3", "views": 1, "lr": 3e-4},
    {"model": "efficientnet_lite1", "finetune": "last:3", "views": 2, "lr": 3e-4},
    {"model": "efficientnet_lite0", "finetune": "last:2", "views": 4, "lr": 3e-4},
    {"model": "efficientnet_lite2", "finetune": "last:3", "views": 2, "lr": 3e-4},
    {"model": "efficientnet_lite0", "finetune": "full", "lr": 1e-3},
)
SAFETY = 1.15  # a trial starts when its predicted time, times this, fits what is left
ENSEMBLE_CANDIDATES = 4  # the best trials an ensemble may draw from
ENSEMBLE_STEPS = 6  # greedy additions (with replacement) at most
FINAL_S = 5.0  # copying the winner and building the report, beside its evaluation
STALE_S = 300.0  # a running trial whose process has not been heard from for this long is taken as dead
ALIVE_EVERY_S = 30.0


@dataclass
class Arm:
    """What a trial trains (its learning rate aside): one backbone, one cut, K cached views."""

    model: str
    finetune: str
    views: int  # 0: no cache (full fine-tuning)

    @property
    def key(self) -> str:
        return f"{self.model}|{self.finetune}|{self.views}"

    @property
    def max_epochs(self) -> int:
        return MAX_EPOCHS["head" if self.finetune == "head" else "full" if self.finetune == "full" else "last"]


@dataclass
class Plan:
    """What this process's search works with: the data, the base recipe, the candidates and their costs,
    the budget."""

    base: TrainConfig
    splits: object
    out: Path
    study_name: str
    storage_url: str
    metric: str
    direction: str
    models: list[str]
    costs: dict = field(default_factory=dict)  # model -> engine.cost.Costs
    deadline: float = 0.0  # monotonic: when this command must be done
    reserve: float = 0.0  # seconds kept for the winner's evaluation and the report


# -- the folder and the storage ----------------------------------------------------------------------


def check_out(out: Path, data: str, study: str, *, force: bool) -> dict:
    """``auto.json`` of ``out`` (a new one when the folder is new or empty). A folder of a user's files is
    refused without ``force``; another search's folder (other data or another study) always."""
    record = out / "auto.json"
    if record.is_file():
        meta = read_json(record, expect=dict)
        if meta.get("kind") != "imgcls-auto":
            raise ImgclsError(f"{out}: its auto.json is not an imgcls search's; choose another --out")
        if meta.get("data") != data or meta.get("study") != study:
            raise ImgclsError(
                f"{out} holds another search (study {meta.get('study')!r} of {meta.get('data')}); choose another "
                "--out (or the same data and --study to continue it)"
            )
        return meta
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ImgclsError(f"{out} holds files that are not an imgcls search; choose another --out (or pass --force)")
    return {"kind": "imgcls-auto", "data": data, "study": study, "invocations": []}


def redact(url: str) -> str:
    """A storage URL without its password, for files and messages."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_storage(url: str):
    """An Optuna storage from ``url``: any database URL SQLAlchemy knows (sqlite, postgresql, mysql...) or
    ``journal:///path`` (a journal file, e.g. on a shared disk). One line when it cannot be opened."""
    import optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            rest = url[len("journal:") :]
            path = Path(rest[2:] if rest.startswith("//") else rest)  # journal:///abs/path or journal://relative
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
        return _rdb(url, engine)
    except Exception as exc:  # noqa: BLE001 - drivers and SQLAlchemy raise their own types for a bad URL
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImgclsError(f"--storage {redact(url)}: cannot open it ({why})") from None


def _rdb(url: str, engine: dict, attempts: int = 5):
    """An RDB storage; processes that start on one empty database together race to create its tables
    (one of them fails with a duplicate-key or already-exists error): such a failure is tried again."""
    import optuna
    from sqlalchemy.exc import IntegrityError, InternalError, ProgrammingError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except (IntegrityError, InternalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))  # the other process is creating the tables: let it finish


# -- the budget --------------------------------------------------------------------------------------


def spent_before(meta: dict, host: str) -> float:
    """Seconds earlier runs of this command in this folder used (a killed one: until it was last heard
    from). Runs still alive on this machine are parallel workers, not spent time."""
    total = 0.0
    for run in meta.get("invocations", []):
        if run.get("host") == host and run.get("running") and _alive(run.get("pid")):
            continue
        total += float(run.get("seconds", 0.0))
    return total


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return pid == os.getpid()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Invocation:
    """This run's line in ``auto.json``: when it started and how long it has run (kept up to date, so a
    killed run's spent time is known to the next)."""

    def __init__(self, out: Path, meta: dict, started_wall: float, limit: float):
        self.out, self.meta = out, meta
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started_wall,
            "seconds": 0.0,
            "limit": limit,
            "running": True,
        }
        self.meta.setdefault("invocations", []).append(self.record)
        self.lock = threading.Lock()

    def update(self, elapsed: float, *, running: bool = True) -> None:
        with self.lock:
            self.record.update(seconds=round(elapsed, 1), running=running)
            current = (
                read_json(self.out / "auto.json", expect=dict) if (self.out / "auto.json").is_file() else self.meta
            )
            others = [
                r
                for r in current.get("invocations", [])
                if not (r.get("host") == self.record["host"] and r.get("pid") == self.record["pid"])
            ]
            self.meta = {**self.meta, **current, "invocations": [*others, self.record]}
            write_json(self.out / "auto.json", self.meta)


# -- the search space ---------------------------------------------------------------------------------


def suggest(trial, models: list[str]) -> Arm:
    """The trial's arm and learning rate, define-by-run: a model without pretrained weights trains whole."""
    from imgcls.models.registry import get_model_info, parse_model_spec

    model = trial.suggest_categorical("model", models)
    if get_model_info(parse_model_spec(model)[0]).has_weights:
        finetune = trial.suggest_categorical("finetune", CUTS)
    else:
        finetune = "full"
    views = trial.suggest_categorical("views", VIEWS) if finetune != "full" else 0
    trial.suggest_float("lr", *LR, log=True)
    return Arm(model, finetune, views)


def arm_of(params: dict) -> Arm:
    finetune = params.get("finetune", "full")
    return Arm(params["model"], finetune, int(params.get("views", 0)) if finetune != "full" else 0)


# -- costs ---------------------------------------------------------------------------------------------


def measure_costs(plan: Plan, say) -> None:
    """Each candidate backbone timed here, at the size it will train at."""
    from imgcls.engine.cost import Costs, measure_model
    from imgcls.models.registry import get_model_info, parse_model_spec

    sample = [s.path for s in plan.splits.train[:: max(1, len(plan.splits.train) // 8)][:8]]
    t0 = time.perf_counter()
    for spec in plan.models:
        info = get_model_info(parse_model_spec(spec)[0])
        size = plan.base.image_size or info.default_image_size
        cost = measure_model(spec, len(plan.splits.classes), size, sample)
        plan.costs[spec] = Costs(cost, len(plan.splits.train), len(plan.splits.val), plan.base.workers or 0)
    say(f"measured {len(plan.models)} backbone(s) on this machine in {time.perf_counter() - t0:.1f}s")


def observed(study, host: str) -> dict:
    """What finished trials of each arm measured on this machine: extraction and epoch seconds."""
    out: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if attrs.get("host") != host or "epoch_s" not in attrs:
            continue
        seen = out.setdefault(attrs.get("arm", ""), {"extraction_s": 0.0, "epoch_s": 0.0, "extracted": False})
        seen["epoch_s"] = max(seen["epoch_s"], float(attrs["epoch_s"]))
        seen["extraction_s"] = max(seen["extraction_s"], float(attrs.get("extraction_s", 0.0)))
        seen["extracted"] = seen["extracted"] or bool(attrs.get("extraction_s"))
    return out


def predict_seconds(plan: Plan, arm: Arm, seen: dict) -> tuple[float, float]:
    """(one-time seconds before the first epoch, seconds per epoch) for ``arm``: measured when an earlier
    trial of the arm ran here (its extraction is then in the feature cache), else estimated."""
    costs = plan.costs[arm.model]
    estimate_epoch = costs.epoch(arm.finetune, cached=arm.views > 0) + 0.3  # + a validation's overhead
    estimate_first = (costs.extraction(arm.finetune, arm.views) if arm.views else 0.0) + 2.0  # + building the model
    if arm.key in seen:
        record = seen[arm.key]
        return (2.0 if record["extracted"] else estimate_first), max(record["epoch_s"], 0.05)
    return estimate_first, estimate_epoch


def cheapest(plan: Plan) -> tuple[float, str]:
    """The measured time of the cheapest useful trial (two epochs) and what it is."""
    best = None
    for model in plan.models:
        for arm in (Arm(model, "head", 1), Arm(model, "full", 0)):
            from imgcls.models.registry import get_model_info, parse_model_spec

            if arm.finetune == "head" and not get_model_info(parse_model_spec(model)[0]).has_weights:
                continue
            first, epoch = predict_seconds(plan, arm, {})
            total = first + 2 * epoch
            if best is None or total < best[0]:
                what = f"{model} {'head-only from 1 cached view' if arm.views else 'trained whole'}, 2 epochs"
                best = (total, what)
    return best


# -- one trial -------------------------------------------------------------------------------------------


def trial_config(plan: Plan, arm: Arm, lr: float, epochs: int, out: Path) -> TrainConfig:
    from imgcls.core.config import coerce

    return replace(
        plan.base,
        model=arm.model,
        finetune=arm.finetune,
        feature_cache=arm.views if arm.views else None,
        augment=plan.base.augment if plan.base.augment != "none" or arm.views == 0 else "reference",
        lr=coerce("lr", lr),
        epochs=epochs,
        out=str(out),
    )


def budget_callback(deadline: float, epoch_estimate: float):
    """Stops a trial between epochs when the next one would not end before ``deadline``, and inside an
    epoch when the deadline has passed (Lightning then validates what ran of it)."""
    from lightning.pytorch.callbacks import Callback

    class Budget(Callback):
        def __init__(self):
            self.started = time.monotonic()
            self.longest = epoch_estimate
            self.stopped = None

        def on_train_epoch_start(self, trainer, pl_module):
            self.started = time.monotonic()

        def on_validation_end(self, trainer, pl_module):
            if trainer.sanity_checking:
                return
            self.longest = max(self.longest * 0.5, time.monotonic() - self.started)  # the measured epoch counts most
            if time.monotonic() + self.longest > deadline and trainer.current_epoch + 1 < trainer.max_epochs:
                trainer.should_stop = True
                self.stopped = f"out of time after epoch {trainer.current_epoch + 1}"

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if time.monotonic() > deadline and not trainer.should_stop:
                trainer.should_stop = True
                self.stopped = f"out of time in epoch {trainer.current_epoch + 1}"

    return Budget()


def heartbeat(study, trial_id: int, stop: threading.Event) -> threading.Thread:
    """The trial's ``alive`` time, refreshed while it runs (an extraction has no epochs to report), so other
    processes can tell a dead trial from a slow one."""

    def beat():
        while not stop.wait(ALIVE_EVERY_S):
            try:
                study._storage.set_trial_user_attr(trial_id, "alive", time.time())
            except Exception:  # noqa: BLE001 - a storage hiccup must not kill the training
                pass

    thread = threading.Thread(target=beat, daemon=True, name="imgcls-auto-heartbeat")
    thread.start()
    return thread


def run_trial(plan: Plan, study, trial, arm: Arm, epochs: int, first_s: float, epoch_s: float, say) -> None:
    """Train one trial into its run folder and tell the study what it reached (or why it stopped)."""
    import optuna
    from optuna.trial import TrialState
    from optuna_integration import PyTorchLightningPruningCallback

    from imgcls.core.deadline import DeadlineReached, deadline
    from imgcls.core.rundir import RunPaths, read_metrics
    from imgcls.engine.callbacks import ValidationProbabilities
    from imgcls.engine.train import train

    params = trial.params
    resume_from = trial.user_attrs.get("resume_from")
    folder = Path(resume_from) if resume_from else plan.out / "trials" / f"{trial.number:04d}-{_slug(arm)}"
    host = socket.gethostname()
    for key, value in {
        "host": host,
        "pid": os.getpid(),
        "run": str(folder.resolve()),
        "arm": arm.key,
        "max_epochs": epochs,
        "predicted_s": round(first_s + epochs * epoch_s, 1),
        "alive": time.time(),
    }.items():
        trial.set_user_attr(key, value)
    cfg = trial_config(plan, arm, params["lr"], epochs, folder)
    monitor = "val_mAP" if plan.splits.task == "multilabel" else "val_acc"
    pruning = PyTorchLightningPruningCallback(trial, monitor=plan.metric if plan.metric != "auto" else monitor)
    budget = budget_callback(plan.deadline - plan.reserve, epoch_s)
    keep = ValidationProbabilities(RunPaths(folder), monitor, "max")
    stop = threading.Event()
    beat = heartbeat(study, trial._trial_id, stop)
    t0 = time.monotonic()
    state, why = TrialState.COMPLETE, ""
    resume = bool(resume_from) and (folder / "checkpoints" / "last.ckpt").is_file()
    try:
        with deadline(plan.deadline - plan.reserve):
            train(
                cfg,
                resume=resume,
                progress=False,
                extra_callbacks=[keep, pruning, budget],
                splits=None if resume else plan.splits,
                force=not resume and folder.exists(),
            )
    except optuna.TrialPruned as exc:
        state, why = TrialState.PRUNED, str(exc).removeprefix("Trial was ").rstrip(".")
    except DeadlineReached:
        state, why = TrialState.FAIL, "out of time before its first epoch ended"
    except ImgclsError as exc:
        state, why = TrialState.FAIL, str(exc)
    finally:
        stop.set()
        beat.join(timeout=5)
    seconds = time.monotonic() - t0
    rows = read_metrics(folder / "metrics.csv") if (folder / "metrics.csv").is_file() else []
    value = _best(rows, _metric(plan), plan.direction)
    summary = _summary(folder)
    if budget.stopped and state == TrialState.COMPLETE:
        why = budget.stopped
    attrs = {
        "seconds": round(seconds, 1),
        "epochs": len(rows),
        "extraction_s": summary.get("feature_cache_seconds", 0.0) if not summary.get("feature_cache_hit") else 0.0,
        "why": why,
    }
    if rows:
        attrs["epoch_s"] = round(sum(r["epoch_seconds"] for r in rows) / len(rows), 2)
    if value is not None:
        attrs["value"] = value
    for key, item in attrs.items():
        trial.set_user_attr(key, item)
    if state == TrialState.COMPLETE and value is None:
        state, why = TrialState.FAIL, "no epoch completed"
        trial.set_user_attr("why", why)
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    shown = f"{_metric(plan)} {value:.4f}" if value is not None else "no score"
    more = f" ({why})" if why else ""
    say(f"[trial {trial.number}] {state.name.lower()}: {shown} after {len(rows)} epoch(s) in {seconds:.0f}s{more}")


def _slug(arm: Arm) -> str:
    import re

    views = f"-k{arm.views}" if arm.views else ""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{arm.model}-{arm.finetune.replace(':', '')}{views}")


def _metric(plan: Plan) -> str:
    if plan.metric != "auto":
        return plan.metric
    return "val_mAP" if plan.splits.task == "multilabel" else "val_acc"


def _best(rows: list[dict], metric: str, direction: str) -> float | None:
    values = [r[metric] for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    if not values:
        return None
    return max(values) if direction == "maximize" else min(values)


def _summary(folder: Path) -> dict:
    path = folder / "summary.json"
    try:
        summary = read_json(path) if path.is_file() else {}
    except ImgclsError:
        return {}
    return summary if isinstance(summary, dict) else {}


# -- the search -------------------------------------------------------------------------------------------


def fail_stale(study, say) -> None:
    """Trials left running by a process that died (this machine: its PID is gone; elsewhere: not heard from
    for STALE_S) are failed and asked again with the same settings, resuming their run folder."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        dead = attrs.get("host") == host and not _alive(attrs.get("pid"))
        silent = (
            time.time() - float(attrs.get("alive", t.datetime_start.timestamp() if t.datetime_start else 0)) > STALE_S
        )
        if not (dead or silent) or attrs.get("pid") == os.getpid():
            continue
        try:
            study._storage.set_trial_user_attr(t._trial_id, "why", "its process died; asked again")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another process failed it first: it re-asks it
            continue
        if t.params:
            study.enqueue_trial(
                t.params, user_attrs={"resume_from": attrs.get("run"), "retry_of": t.number}, skip_if_exists=False
            )
        say(f"[trial {t.number}] its process died: it runs again, from its last completed epoch")


def search(plan: Plan, study, say) -> None:
    """Ask, check the budget, train, tell: until the time for another useful trial is gone."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    skipped = 0
    while True:
        left = plan.deadline - plan.reserve - time.monotonic()
        if left < cheapest(plan)[0] * 0.5:
            break
        trial = ask(plan, study)
        arm = suggest(trial, plan.models)
        first_s, epoch_s = predict_seconds(plan, arm, observed(study, host))
        epochs = min(arm.max_epochs, int((left / SAFETY - first_s) // epoch_s)) if epoch_s > 0 else arm.max_epochs
        minimum = 1 if arm.finetune == "full" else 2
        if epochs < minimum:  # not started: told as failed, so the sampler learns nothing from it
            trial.set_user_attr("why", f"not started: predicted {first_s + minimum * epoch_s:.0f}s, {left:.0f}s left")
            trial.set_user_attr("skipped", True)
            study.tell(trial, state=TrialState.FAIL)
            skipped += 1
            if skipped >= 12:  # the sampler keeps proposing what does not fit: the budget is spent
                say(f"{skipped} proposals in a row would not fit in the {left:.0f}s left: the search ends here")
                break
            continue
        skipped = 0
        say(
            f"[trial {trial.number}] {arm.model} {arm.finetune}"
            + (f" from {arm.views} cached view(s)" if arm.views else "")
            + f", lr {trial.params['lr']:.1e}, up to {epochs} epoch(s): predicted {first_s + epochs * epoch_s:.0f}s"
            + f" of the {left:.0f}s left"
        )
        run_trial(plan, study, trial, arm, epochs, first_s, epoch_s, say)


def make_study(plan: Plan, storage, seed: int):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(FIRST), multivariate=True, group=True)
    # A trial in the bottom quarter of the trials that reached the same epoch stops there, from its third
    # epoch on and once three trials have run. Successive halving (halving at epochs 1, 2, 4) stopped the
    # trial that would have been the best on food5 after 3 of its 6 epochs: with a handful of trials and a
    # few hundred validation images, halving is mostly noise.
    pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=2)
    try:
        study = optuna.create_study(
            study_name=plan.study_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=plan.direction,
            load_if_exists=True,
        )
    except ValueError as exc:  # an existing study optimised the other way
        raise ImgclsError(f"study {plan.study_name!r} in {redact(plan.storage_url)}: {exc}") from None
    return study


def ask(plan: Plan, study):
    """The next trial: one waiting in the study (a dead process's trial, asked again), else the next of the
    measured first settings not yet run (a run whose budget could not fit one asks for it again next time),
    else the sampler's proposal. Under a lock in OUT, so processes sharing the folder never enqueue one
    setting twice."""
    import fcntl

    from optuna.trial import TrialState

    with open(plan.out / ".ask.lock", "a+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            trials = study.get_trials(deepcopy=False)
            if not any(t.state == TrialState.WAITING for t in trials):
                live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                tried = [t.system_attrs.get("fixed_params", t.params) for t in trials if t.state in live]
                following = next((p for p in FIRST if p["model"] in plan.models and p not in tried), None)
                if following is not None:
                    study.enqueue_trial(dict(following))
            return study.ask()
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)


# -- the end: the winner, its one held-out evaluation, the report ------------------------------------------


def leaderboard(study, metric: str, direction: str) -> list[dict]:
    """Every trial of the study (every process's) that was started, best first: what it tried, reached,
    cost and why it ended. Proposals that did not fit the time left are not listed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a, p = t.user_attrs, t.params
        if a.get("skipped") or t.state.name == "WAITING":
            continue
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "model": p.get("model"),
                "finetune": p.get("finetune", "full" if p.get("model") else None),
                "views": p.get("views", 0) if p.get("finetune", "full") != "full" else 0,
                "lr": p.get("lr"),
                metric: a.get("value"),
                "epochs": a.get("epochs"),
                "max_epochs": a.get("max_epochs"),
                "seconds": a.get("seconds"),
                "predicted_s": a.get("predicted_s"),
                "stopped": a.get("why", ""),
                "host": a.get("host"),
                "run": a.get("run"),
            }
        )
    sign = -1 if direction == "maximize" else 1
    return sorted(rows, key=lambda r: (r[metric] is None, sign * (r[metric] or 0), r["trial"]))


def winner(rows: list[dict], metric: str) -> dict | None:
    """The best trial by validation whose run folder is here and holds a best checkpoint."""
    for row in rows:
        if row[metric] is not None and row["run"] and (Path(row["run"]) / "checkpoints" / "best.ckpt").is_file():
            return row
    return None


def copy_best(source: Path, out: Path) -> Path:
    """``OUT/best``: the winner's run folder (checkpoints hard-linked when the disk allows; they are never
    written in place), without its own evaluations or exports; swapped in whole."""
    import shutil

    from imgcls.core.files import staged_folder

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    skip = shutil.ignore_patterns("eval", "export", "explain", "inference.json", ".lock", ".*.tmp")
    with staged_folder(out / "best") as stage:
        shutil.copytree(source, stage, ignore=skip, copy_function=link, dirs_exist_ok=True)
    return out / "best"


def finalize(plan: Plan, study, say) -> dict:
    """The winner into OUT/best, scored once on the held-out split, and the report; under a lock, so the
    processes of one search write one report in turn (each from the whole study)."""
    import fcntl

    from imgcls.core.tables import write_csv

    metric = _metric(plan)
    _wait_for_others(plan, study, say)
    with open(plan.out / ".finalize.lock", "a+") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            rows = leaderboard(study, metric, plan.direction)
            best = winner(rows, metric)
            write_csv(
                plan.out / "leaderboard.csv", list(rows[0]) if rows else ["trial"], [list(r.values()) for r in rows]
            )
            if best is None:
                raise ImgclsError(
                    f"no trial of the search reached a validation score in the time given (see {plan.out / 'leaderboard.csv'})"
                )
            chosen = choose_ensemble(plan, rows, metric)
            if chosen is not None:
                folder = build_ensemble(plan, chosen)
                say(
                    f"ensemble of trials {', '.join(str(r['trial']) for r, _ in chosen['members'])}: validation "
                    f"{metric} {chosen['value']:.4f} against {best[metric]:.4f} for trial {best['trial']} alone"
                )
            else:
                folder = copy_best(Path(best["run"]), plan.out)
            held_out = _evaluate_best(plan, folder)
            final = {
                "metric": metric,
                "best": best,
                "held_out": held_out,
                "ensemble": None if chosen is None else [[r["trial"], w] for r, w in chosen["members"]],
                "ensemble_value": None if chosen is None else chosen["value"],
            }
            _record(plan.out, final)
            report = report_from_files(plan.out)
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)
    return {
        "leaderboard": rows,
        "best": best,
        "ensemble": None
        if chosen is None
        else {"members": [[r["trial"], w] for r, w in chosen["members"]], "value": chosen["value"]},
        "best_run": str(folder),
        "held_out": held_out,
        "report": str(report),
    }


def _wait_for_others(plan: Plan, study, say) -> None:
    """When no trial has a score yet but other processes' trials are running, wait for them (until this
    process's own time is up): the processes of one search each end with the same winner."""
    from optuna.trial import TrialState

    def scored() -> bool:
        return any("value" in t.user_attrs for t in study.get_trials(deepcopy=False))

    running = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.user_attrs.get("pid") != os.getpid()
    ]
    if scored() or not running:
        return
    say(f"waiting for {len(running)} trial(s) of other processes to reach a score")
    while not scored() and time.monotonic() < plan.deadline - plan.reserve * 0.5:
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(0.5)  # the other processes write to the storage; there is nothing to wait on but it


def _evaluate_best(plan: Plan, folder: Path) -> dict:
    """The winner on the held-out split (once, after the search), or on validation when there is none, in
    PyTorch: for one pass over a few hundred images an ONNX export first costs more than it saves."""
    from imgcls.commands.evaluate import evaluate

    labelled = bool(plan.splits.test) and plan.splits.test_labeled
    split = "evaluation" if labelled else "validation"
    result = evaluate(folder, split=split, workers=plan.base.workers, engine="torch")
    key = "mAP" if result["task"] == "multilabel" else "top1"
    return {"split": split, "metric": key, "value": result[key], "images": result["images"]}


def _record(out: Path, final: dict) -> None:
    """The search's outcome in auto.json (what ``imgcls report OUT`` rebuilds the report from)."""
    meta = read_json(out / "auto.json", expect=dict)
    write_json(out / "auto.json", {**meta, "result": final})


def report_from_files(out: Path) -> Path:
    """The report of a search from its folder alone: auto.json's outcome, leaderboard.csv, the run folders
    (``imgcls report OUT`` calls this too)."""
    from imgcls.core.tables import read_table
    from imgcls.report.auto_report import search_section
    from imgcls.report.build import build_report

    out = Path(out)
    final = read_json(out / "auto.json", expect=dict).get("result")
    if not isinstance(final, dict):
        raise ImgclsError(f"{out}: the search has not finished (no result in auto.json); run imgcls auto again")
    metric, best = final["metric"], final["best"]
    rows = [_typed(r) for r in read_table(out / "leaderboard.csv", ours=True, exact=True, empty_ok=True).rows]
    others = [
        Path(r["run"])
        for r in rows
        if r.get(metric) is not None
        and r["run"]
        and r["run"] != best["run"]
        and (Path(r["run"]) / "summary.json").is_file()
    ]
    ensemble = (final["ensemble"], final.get("ensemble_value")) if final.get("ensemble") else None
    html, md = search_section(
        rows, best, final["held_out"], metric=metric, folder=out / "report_files", ensemble=ensemble
    )
    return build_report(out, runs=[out / "best", *others[:5]], title="imgcls auto", extra_html=html, extra_md=md)


def _typed(row: dict) -> dict:
    """A leaderboard.csv row with its numbers as numbers (empty cells: None)."""
    out = {}
    for key, value in row.items():
        if value == "":
            out[key] = None
        elif key in ("trial", "views", "epochs", "max_epochs"):
            out[key] = int(float(value))
        elif key in ("lr", "seconds", "predicted_s") or key.startswith("val_"):
            out[key] = float(value)
        else:
            out[key] = value
    return out


# -- the command ----------------------------------------------------------------------------------------------


def auto(
    base: TrainConfig,
    *,
    time_limit: float,
    out: str | Path,
    models: list[str] | None = None,
    metric: str = "auto",
    storage: str | None = None,
    study_name: str | None = None,
    force: bool = False,
    started: float | None = None,
    say=print,
) -> dict:
    """Search for ``time_limit`` seconds of wall clock (counted from ``started``, the command's start) and
    return the leaderboard, the winner, its held-out score and the report's path."""
    from imgcls.core.system import default_workers
    from imgcls.plan import ModelChoice, discover_data

    started = time.monotonic() if started is None else started
    out = Path(out)
    candidates = list(dict.fromkeys([*DEFAULT_MODELS, *(models or [])]))
    for spec in candidates:
        ModelChoice.parse(spec)  # an unknown model is one line, before anything is read or written
    if not base.data:
        raise ImgclsError("no data folder given: pass --data DIR")
    if not Path(base.data).is_dir():
        raise ImgclsError(f"data folder not found: {base.data}")
    data = str(Path(base.data).resolve())
    study_name = study_name or out.resolve().name
    meta = check_out(out, data, study_name, force=force)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    out.mkdir(parents=True, exist_ok=True)
    storage_obj = open_storage(url)
    host = socket.gethostname()
    spent = spent_before(meta, host)
    budget = time_limit - spent
    if budget <= 0:
        raise ImgclsError(
            f"{out}: this search already used {spent:.0f}s of its --time-limit {time_limit:.0f}s; give a larger "
            "--time-limit to search longer"
        )
    base = replace(base, workers=default_workers() if base.workers is None else base.workers)
    splits = discover_data(base)  # once, for every trial
    task = "multilabel" if base.task == "multilabel" or splits.task == "multilabel" else "single"
    chosen = metric if metric != "auto" else ("val_mAP" if task == "multilabel" else "val_acc")
    if chosen == "val_acc" and task == "multilabel":
        raise ImgclsError("--metric val_acc scores one class per image; this data is multi-label (use val_mAP)")
    if chosen == "val_mAP" and task != "multilabel":
        raise ImgclsError("--metric val_mAP scores multi-label data; this data has one class per image (use val_acc)")
    plan = Plan(
        base=base,
        splits=splits,
        out=out,
        study_name=study_name,
        storage_url=url,
        metric=chosen,
        direction="minimize" if chosen == "val_loss" else "maximize",
        models=candidates,
        deadline=started + budget,
    )
    meta.update(storage=redact(url), metric=chosen, time_limit_s=time_limit, models=candidates, task=task)
    run = Invocation(out, meta, time.time() - (time.monotonic() - started), time_limit)
    run.update(time.monotonic() - started)
    try:
        measure_costs(plan, say)
        # The winner's evaluation at the end: an ensemble of the two costliest backbones at most.
        evaluations = sorted((plan.costs[m].evaluation(_held_out_images(plan)) for m in plan.models), reverse=True)
        plan.reserve = sum(evaluations[:2]) + FINAL_S
        need, what = cheapest(plan)
        left = plan.deadline - time.monotonic()
        if need + plan.reserve > left * SAFETY and not _has_results(out):
            raise ImgclsError(
                f"--time-limit {time_limit:.0f}s cannot fit the cheapest useful trial: {what} was measured to need "
                f"~{need:.0f}s here, and evaluating the winner ~{plan.reserve:.0f}s, with {left:.0f}s left"
            )
        study = make_study(plan, storage_obj, base.seed)
        fail_stale(study, say)
        say(
            f"searching {', '.join(candidates)} on {len(splits.train)} training / {len(splits.val)} validation images "
            f"for {max(0.0, left):.0f}s ({chosen}; study {study_name!r} in {redact(url)})"
        )
        search(plan, study, lambda line: (say(line), run.update(time.monotonic() - started)))
        result = finalize(plan, study, say)
    finally:
        run.update(time.monotonic() - started, running=False)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["time_limit"] = time_limit
    return result


def _has_results(out: Path) -> bool:
    return (out / "leaderboard.csv").is_file()


# -- an ensemble of the best trials ----------------------------------------------------------------------


def _score(probs, targets, multilabel: bool) -> tuple[float, float]:
    """(the validation metric, the mean log-loss) of probabilities against targets; higher first is better."""
    import numpy as np

    if multilabel:
        import torch
        from torchmetrics.functional.classification import multilabel_average_precision

        from imgcls.engine.label_metrics import present_mean

        t = torch.as_tensor(targets)
        ap = multilabel_average_precision(torch.as_tensor(probs), t.long(), t.shape[1], average="none")
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        return present_mean(ap, t), float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
    return float((probs.argmax(1) == targets).mean()), float(
        -np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-7, 1)).mean()
    )


def choose_ensemble(plan: Plan, rows: list[dict], metric: str) -> dict | None:
    """Caruana's greedy selection with replacement, from the best trials' saved validation probabilities:
    start from the best trial, add whichever trial (again, if it helps) raises the validation metric most
    (ties: the lower log-loss), stop when nothing does. Kept only when it beats the best trial alone on
    validation and its evaluation fits the time left; never for ``val_loss`` searches."""
    import numpy as np

    if metric == "val_loss":
        return None
    multilabel = plan.splits.task == "multilabel"
    val = plan.splits.val
    if multilabel:
        targets = np.zeros((len(val), len(plan.splits.classes)), dtype=np.float32)
        for i, s in enumerate(val):
            targets[i, list(s.label)] = 1
    else:
        targets = np.array([s.label for s in val])
    pool = []
    for r in rows:
        saved = Path(r["run"] or "") / "validation_probs.npz"
        if r[metric] is None or not saved.is_file() or "," in (r["model"] or ","):
            continue
        with np.load(saved) as data:
            probs = data["probs"]
        if len(probs) == len(val):  # every validation image (a file that failed to decode would shift rows)
            pool.append((r, probs))
        if len(pool) == ENSEMBLE_CANDIDATES:
            break
    if len(pool) < 2:
        return None
    chosen = [0]
    current = _score(pool[0][1], targets, multilabel)
    alone = current[0]
    for _ in range(ENSEMBLE_STEPS):
        trials = []
        for k in range(len(pool)):
            mean = np.mean([pool[i][1] for i in [*chosen, k]], axis=0)
            trials.append((_score(mean, targets, multilabel), k))
        (score, nll), k = max(trials, key=lambda item: (item[0][0], -item[0][1]))
        if (score, -nll) <= (current[0], -current[1]):
            break
        chosen.append(k)
        current = (score, nll)
    counts = {k: chosen.count(k) for k in dict.fromkeys(chosen)}
    if len(counts) < 2 or current[0] <= alone:
        return None
    cost = sum(
        plan.costs[pool[k][0]["model"]].evaluation(_held_out_images(plan))
        for k in counts
        if pool[k][0]["model"] in plan.costs
    )
    # The reserve holds the evaluation of two members by construction; more must fit in what is left.
    if cost > plan.reserve - FINAL_S and time.monotonic() + cost + FINAL_S > plan.deadline:
        return None
    return {"members": [(pool[k][0], counts[k]) for k in counts], "value": current[0], "log_loss": current[1]}


def _held_out_images(plan: Plan) -> int:
    return len(plan.splits.test) if plan.splits.test and plan.splits.test_labeled else len(plan.splits.val)


def build_ensemble(plan: Plan, chosen: dict) -> Path:
    """``OUT/best`` as a run folder whose model is the ensemble: its config (the best member's recipe with
    the ensemble's spec), classes and splits, one metrics row (the ensemble's validation score, from the
    members' saved validation probabilities), a summary naming the members, and a checkpoint holding every
    member's weights."""
    import shutil

    import numpy as np
    import torch

    from imgcls.core.config import dump_config, load_run_config
    from imgcls.core.files import atomic_write, staged_folder
    from imgcls.core.rundir import metrics_columns, write_metrics
    from imgcls.models.ensemble import ensemble_spec
    from imgcls.models.profile import count_gflops, count_params
    from imgcls.models.weights import load_state_dict_file
    from imgcls.plan import ModelChoice

    members = chosen["members"]
    runs = [Path(r["run"]) for r, _ in members]
    configs = [load_run_config(run / "config.yaml") for run in runs]
    multilabel = plan.splits.task == "multilabel"
    sizes = [c.image_size for c in configs]
    spec = ensemble_spec([c.model for c in configs], sizes, [w for _, w in members], multilabel)
    cfg = replace(
        configs[0], model=spec, image_size=max(sizes), finetune="full", feature_cache=0, pretrained=False, epochs=1
    )
    state = {}
    for i, run in enumerate(runs):
        weights = load_state_dict_file(run / "checkpoints" / "best.ckpt")["state_dict"]
        state.update({f"model.members.{i}.{k[6:]}": v for k, v in weights.items() if k.startswith("model.")})
    model = ModelChoice.parse(spec).build(len(plan.splits.classes), image_size=cfg.image_size)
    params, _ = count_params(model)
    first = _summary(runs[0])
    metric = "val_mAP" if multilabel else "val_acc"
    row = {"epoch": 1, "val_loss": chosen["log_loss"], metric: chosen["value"], "epoch_seconds": 0.0}
    seconds = sum(_summary(run).get("train_seconds", 0.0) for run in runs)
    summary = {
        **{
            k: first.get(k)
            for k in (
                "task",
                "num_classes",
                "category",
                "train_images",
                "val_images",
                "device",
                "precision",
                "torch",
                "python",
            )
        },
        "model": spec,
        "image_size": cfg.image_size,
        "default_image_size": cfg.image_size,
        "pretrained": False,
        "finetune": "ensemble",
        "params": params,
        "trainable_params": 0,
        "gflops": round(count_gflops(model, cfg.image_size), 4),
        "epochs_requested": 1,
        "metric": metric,
        f"best_{metric}": chosen["value"],
        f"final_{metric}": chosen["value"],
        "best_epoch": 1,
        "final_val_loss": chosen["log_loss"],
        "epochs_completed": 1,
        "train_seconds": round(seconds, 3),
        "seconds_per_epoch": 0.0,
        "complete": True,
        "ensemble": {
            "members": [
                {
                    "trial": r["trial"],
                    "run": r["run"],
                    "model": c.model,
                    "finetune": c.finetune,
                    "weight": w,
                    metric: r[metric],
                }
                for (r, w), c in zip(members, configs)
            ],
            "validation": "the members' validation probabilities (saved at their best epochs), averaged with these weights",
            "train_seconds": "the members' together",
        },
    }
    checkpoint = {"state_dict": state, "epoch": 0, "global_step": 0, "imgcls_config": cfg.to_dict()}
    with staged_folder(plan.out / "best") as stage:
        cfg = replace(cfg, out=str(plan.out / "best"))
        dump_config(cfg, stage / "config.yaml")
        for name in ("classes.json", "splits.csv", "data_edits.csv", "bad_files.txt"):
            if (runs[0] / name).is_file():
                shutil.copy2(runs[0] / name, stage / name)
        write_metrics(stage / "metrics.csv", [row], metrics_columns("multilabel" if multilabel else "single"))
        write_json(stage / "summary.json", summary)
        (stage / "checkpoints").mkdir()
        for name in ("best.ckpt", "last.ckpt"):
            atomic_write(
                stage / "checkpoints" / name, lambda fh: torch.save(checkpoint, fh), binary=True, unbuffered=True
            )
        if multilabel:
            from imgcls.engine.thresholds import tune

            mean = np.average(
                [np.load(Path(r["run"]) / "validation_probs.npz")["probs"] for r, _ in members],
                axis=0,
                weights=[w for _, w in members],
            )
            targets = torch.zeros(len(plan.splits.val), len(plan.splits.classes))
            for i, s in enumerate(plan.splits.val):
                targets[i, list(s.label)] = 1
            thresholds, f1 = tune(torch.as_tensor(mean), targets)
            write_json(
                stage / "thresholds.json",
                {
                    "classes": plan.splits.classes,
                    "thresholds": thresholds,
                    "validation_f1": f1,
                    "images": len(plan.splits.val),
                    "rule": "per label, the threshold with the highest validation F1 of the ensemble's probabilities",
                },
            )
    return plan.out / "best"
