"""``imgcls check-data``: is the data the problem?

The default check decodes every file and lists the ones that will not load. On request, from the
backbone features of every image (the feature cache, with training's key rules):

- ``--label-issues``: out-of-fold probabilities from a linear head (K folds; the image's fold never saw
  its label), then confident learning (cleanlab: ``find_label_issues``, ``get_label_quality_scores``,
  the per-class noise from the estimated joint of given and true labels).
- ``--duplicates``: exact copies (the same decoded pixels, whatever the file format) and near copies
  (cosine similarity of the features at or above ``--near``), within and across splits; a pair with one
  image in training or validation and the other in the held-out split is train/test leakage.
- ``--outliers``: images far from every other (mean similarity to their 5 nearest neighbours, a robust
  z-score below -3), and the class counts.

Everything goes to ``--out`` (default ``check-<data folder>/`` here, never inside the data folder): CSVs,
``summary.json`` and a self-contained ``report.html`` with thumbnails.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from imgcls.core.errors import ImgclsError
from imgcls.core.files import write_json

# Near duplicates: cosine similarity of EfficientNet-Lite0 features at its input size (re-encoded and
from imgcls.core.tables import write_csv
from imgcls.data.layouts import UNLABELED, DatasetSplits, Sample
from imgcls.data.splitfile import relative_path

# Near duplicates: cosine similarity of EfficientNet-Lite0 features at its input size (re-encoded and
# cropped copies), or of features at 64 px (copies resized to half keep their small-scale features),
# each at or above its threshold. Measured on food5 with planted copies: docs/BENCHMARKS.md.
NEAR = 0.90
SMALL, NEAR_SMALL = 64, 0.94
OUTLIER_Z = -3.0
NEIGHBOURS = 5


def output_folder(data_root: Path, out: str | None, *, force: bool = False) -> Path:
    """Where the findings go: ``--out``, or ``check-<data folder name>/`` here (``check-<name>-<hash>/``
    when that holds another dataset's check or other files). Never inside the data folder or over a run
    folder; a folder of other files (or another dataset's check) only with ``force``."""
    import hashlib

    from imgcls.core.rundir import folder_state

    root = data_root.resolve()
    if out:
        candidates = [Path(out)]
    else:
        plain = Path.cwd() / f"check-{data_root.resolve().name}"
        candidates = [plain, plain.with_name(f"{plain.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}")]
    for folder in candidates:
        resolved = folder.resolve()
        if resolved == root or root in resolved.parents:
            raise ImgclsError(f"--out {folder} is inside the data folder {data_root}; check-data never writes there")
        if resolved.exists() and not resolved.is_dir():
            if out:
                raise ImgclsError(f"--out {folder} is a file; give a folder")
            continue
        if folder_state(folder) == "run":
            raise ImgclsError(f"{folder} is a run folder; check-data writes its findings into a folder of their own")
        owner = _checked_data(folder)
        if owner == str(root) or (force and out) or not (folder.is_dir() and any(folder.iterdir())):
            return folder
        if out:
            what = f"a check of {owner}" if owner else "files that check-data did not write"
            raise ImgclsError(f"--out {folder} holds {what}; choose another --out (or pass --force to write into it)")
    raise ImgclsError(f"{candidates[-1]} holds other files; choose a folder for the findings with --out")


def _checked_data(folder: Path) -> str | None:
    """The data folder a check-data folder holds the findings of (None: not check-data's)."""
    summary = folder / "summary.json"
    if not summary.is_file():
        return None
    try:
        from imgcls.core.files import read_json

        record = read_json(summary)
    except ImgclsError:
        return None
    if (
        isinstance(record, dict)
        and record.get("kind", "check-data") == "check-data"
        and {"data", "layout", "images"} <= set(record)
    ):
        return str(record["data"])
    return None


def _every(splits: DatasetSplits) -> tuple[list[Sample], list[str]]:
    samples, names = [], []
    for name in ("train", "val", "test"):
        samples += splits.split(name)
        names += [name] * len(splits.split(name))
    return samples, names


def features(splits: DatasetSplits, samples: list[Sample], *, model: str, image_size: int | None, views: int, workers):
    """(eval-view features (N, D), augmented views (N, V, D) or None) of ``samples``, from the cache."""
    from imgcls.data.transforms import build_eval_transform, build_train_transform
    from imgcls.engine.features import get_features, targets_array
    from imgcls.models.blocks import split
    from imgcls.models.registry import feature_identity
    from imgcls.plan import ModelChoice

    choice = ModelChoice.parse(model)
    if not choice.info.has_weights:
        raise ImgclsError(f"--model {model} has no pretrained weights; check-data needs a pretrained backbone")
    size = image_size or choice.info.default_image_size
    backbone = split(choice.build(len(splits.classes), pretrained=True, image_size=size).eval(), 0)[0]
    identity = feature_identity(model, choice.info, pretrained=True, seed=0, cut="head")
    # The same targets training stores under the same key (a head-only run with --seed 0 shares the entry).
    labels = targets_array(samples, len(splits.classes) if splits.task == "multilabel" else None)
    common = dict(image_size=size, seed=0, identity=identity, workers=workers, labels=labels)
    crop = splits.task != "multilabel"
    base = get_features(backbone, samples, transform=build_eval_transform(size, crop=crop), views=1, **common)
    if len(base.labels) != len(samples):
        raise ImgclsError(
            "some images failed to decode while extracting features; run check-data without options first"
        )
    extra = None
    if views > 1:
        aug = get_features(backbone, samples, transform=build_train_transform(size, "light"), views=views - 1, **common)
        extra = np.asarray(aug.features, dtype=np.float32)
    return np.asarray(base.features[:, 0], dtype=np.float32), extra, base.seconds


def label_issues(
    splits: DatasetSplits, samples: list[Sample], feats: np.ndarray, extra, labelled: list[int], *, folds: int
) -> dict:
    """Confident learning on out-of-fold probabilities; ``labelled`` indexes the labelled ``samples``."""
    import cleanlab
    from cleanlab.count import estimate_joint

    from imgcls.engine.oof import out_of_fold

    labels = [samples[i].label for i in labelled]
    n_classes = len(splits.classes)
    probs = out_of_fold(feats[labelled], labels, n_classes, k=folds, extra=None if extra is None else extra[labelled])
    if splits.task == "multilabel":
        from cleanlab.multilabel_classification import filter as ml_filter
        from cleanlab.multilabel_classification import rank as ml_rank

        given = [list(label) for label in labels]
        probe = ("mAP", _probe_map(probs, labels, n_classes))
        flagged = ml_filter.find_label_issues(given, probs)
        scores = ml_rank.get_label_quality_scores(given, probs)
        suggested = [tuple(np.flatnonzero(p >= 0.5)) for p in probs]
        noise = []
        for c in range(n_classes):
            with_c = [i for i, label in enumerate(labels) if c in label]
            noise.append(float(np.mean([flagged[i] for i in with_c])) if with_c else 0.0)
    else:
        y = np.array(labels)
        probe = ("accuracy", float((probs.argmax(1) == y).mean()))
        flagged = cleanlab.filter.find_label_issues(y, probs)
        scores = cleanlab.rank.get_label_quality_scores(y, probs)
        suggested = probs.argmax(1).tolist()
        joint = estimate_joint(y, probs)  # P(given, true)
        rows = joint.sum(1).clip(min=1e-12)
        noise = (1.0 - np.diag(joint) / rows).tolist()
    return {
        "probs": probs,
        "flagged": np.asarray(flagged),
        "scores": np.asarray(scores),
        "suggested": suggested,
        "noise": noise,
        "probe": probe,
    }


def _probe_map(probs: np.ndarray, labels: list[tuple[int, ...]], n_classes: int) -> float:
    """Mean average precision of the out-of-fold probabilities against the given labels (over the labels
    that occur)."""
    import torch
    from torchmetrics.functional.classification import multilabel_average_precision

    from imgcls.engine.label_metrics import present_mean

    target = torch.zeros(len(labels), n_classes, dtype=torch.long)
    for i, label in enumerate(labels):
        target[i, list(label)] = 1
    ap = multilabel_average_precision(torch.from_numpy(probs).float(), target, n_classes, average="none")
    return present_mean(ap, target)


def duplicates(
    samples: list[Sample], names: list[str], scales: list[tuple[np.ndarray, float]], *, root: str, workers
) -> list[dict]:
    """Exact (same decoded pixels) and near pairs: feature cosine at or above the threshold of any of
    the ``scales`` (features, threshold)."""
    from imgcls.data.scan import per_file, pixel_hash
    from imgcls.engine.neighbours import normalise, search

    hashes = per_file(samples, pixel_hash, kind="pixelhash", root=root, workers=workers)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if hashes.get(s.path):
            groups.setdefault(hashes[s.path], []).append(i)
    pairs: dict[tuple[int, int], dict] = {}
    for members in groups.values():
        for other in members[1:]:
            pairs[(members[0], other)] = {"similarity": 1.0, "kind": "exact"}
    for feats, threshold in scales:
        _, (a, b, sims) = search(normalise(feats), k=1, threshold=threshold)
        for i, j, sim in zip(a.tolist(), b.tolist(), sims.tolist()):
            same = hashes.get(samples[i].path) and hashes.get(samples[i].path) == hashes.get(samples[j].path)
            if not same and ((i, j) not in pairs or pairs[(i, j)]["similarity"] < sim):
                pairs[(i, j)] = {"similarity": round(min(sim, 1.0), 4), "kind": "near"}
    out = []
    for (i, j), found in pairs.items():
        sides = sorted({names[i], names[j]})
        leak = "test" in sides and len(sides) > 1
        out.append({"a": i, "b": j, **found, "splits": "+".join(sides), "leak": leak})
    return sorted(out, key=lambda r: (-r["leak"], r["kind"] != "exact", -r["similarity"]))


def outliers(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score, robust z) per image: mean cosine similarity to its nearest neighbours."""
    from imgcls.engine.neighbours import normalise, search

    top, _ = search(normalise(feats), k=NEIGHBOURS)
    score = top.mean(1).numpy()
    median = np.median(score)
    mad = np.median(np.abs(score - median)) * 1.4826 or 1e-6
    return score, (score - median) / mad


def check_data(
    splits: DatasetSplits,
    *,
    out: str | None,
    label: bool,
    dupes: bool,
    odd: bool,
    model: str,
    image_size: int | None,
    folds: int,
    views: int,
    near: float,
    workers: int | None = None,
    force: bool = False,
) -> dict:
    from imgcls.report.check_report import write_check_report

    root = Path(splits.root)
    folder = output_folder(root, out, force=force)
    samples, names = _every(splits)
    if not samples:
        raise ImgclsError(f"{root}: no images to check")
    labelled = [i for i, s in enumerate(samples) if s.label != UNLABELED and names[i] != "test"]
    if label:
        classes_seen = {
            c
            for i in labelled
            for c in (samples[i].label if isinstance(samples[i].label, tuple) else (samples[i].label,))
        }
        if not labelled:
            raise ImgclsError(f"{root}: no labelled training images; --label-issues needs labels")
        if len(classes_seen) < 2:
            raise ImgclsError(f"{root}: one class only; --label-issues needs two or more")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    feats, extra, extraction = features(
        splits, samples, model=model, image_size=image_size, views=views if label else 1, workers=workers
    )
    summary: dict = {
        "kind": "check-data",
        "data": str(root.resolve()),
        "layout": splits.layout,
        "task": splits.task,
        "images": len(samples),
        "model": model,
        "feature_seconds": round(extraction, 2),
    }
    cls = splits.classes

    def names_of(label) -> str:
        if isinstance(label, tuple):
            return " ".join(cls[c] for c in label)
        return cls[label] if label != UNLABELED else ""

    sections: dict = {}
    if label:
        t = time.perf_counter()
        r = label_issues(splits, samples, feats, extra, labelled, folds=folds)
        order = np.argsort(r["scores"], kind="stable")
        rows = [
            [
                relative_path(samples[labelled[k]].path, root),
                names_of(samples[labelled[k]].label),
                names_of(r["suggested"][k]),
                f"{r['scores'][k]:.6f}",
            ]
            for k in order
        ]
        issues = [row for k, row in zip(order, rows) if r["flagged"][k]]
        write_csv(folder / "label_issues.csv", ["path", "given", "suggested", "score"], issues)
        write_csv(folder / "label_quality.csv", ["path", "given", "suggested", "score"], rows)
        given = [set(samples[i].label) if isinstance(samples[i].label, tuple) else {samples[i].label} for i in labelled]
        write_csv(
            folder / "class_noise.csv",
            ["class", "images", "estimated_noise_rate", "flagged"],
            [
                [
                    c,
                    sum(j in g for g in given),
                    f"{r['noise'][j]:.4f}",
                    sum(1 for k, g in enumerate(given) if j in g and r["flagged"][k]),
                ]
                for j, c in enumerate(cls)
            ],
        )
        summary["label_issues"] = {
            "checked": len(labelled),
            "flagged": len(issues),
            "folds": folds,
            "views": views,
            # How far to trust the flags: where the probe is often wrong, many flags are its own mistakes.
            f"probe_{r['probe'][0]}": round(r["probe"][1], 4),
            "seconds": round(time.perf_counter() - t, 2),
        }
        sections["issues"] = [dict(zip(["path", "given", "suggested", "score"], row)) for row in issues[:48]]
    if dupes:
        t = time.perf_counter()
        small = features(splits, samples, model=model, image_size=SMALL, views=1, workers=workers)[0]
        scales = [(feats, near), (small, min(1.0, near + NEAR_SMALL - NEAR))]
        found = duplicates(samples, names, scales, root=str(root), workers=workers)
        rows = [
            [
                relative_path(samples[d["a"]].path, root),
                relative_path(samples[d["b"]].path, root),
                f"{d['similarity']:.4f}",
                d["kind"],
                d["splits"] + (" (train/test leakage)" if d["leak"] else ""),
            ]
            for d in found
        ]
        write_csv(folder / "duplicates.csv", ["path_a", "path_b", "similarity", "kind", "splits"], rows)
        summary["duplicates"] = {
            "exact": sum(d["kind"] == "exact" for d in found),
            "near": sum(d["kind"] == "near" for d in found),
            "leaks": sum(d["leak"] for d in found),
            "threshold": near,
            "threshold_64px": round(min(1.0, near + NEAR_SMALL - NEAR), 4),
            "seconds": round(time.perf_counter() - t, 2),
        }
        sections["duplicates"] = [
            dict(zip(["path_a", "path_b", "similarity", "kind", "splits"], row)) for row in rows[:32]
        ]
    if odd:
        t = time.perf_counter()
        score, z = outliers(feats)
        flagged = [i for i in np.argsort(score) if z[i] < OUTLIER_Z]
        rows = [
            [
                relative_path(samples[i].path, root),
                names[i],
                names_of(samples[i].label),
                f"{score[i]:.4f}",
                f"{z[i]:.2f}",
            ]
            for i in flagged
        ]
        write_csv(folder / "outliers.csv", ["path", "split", "label", "neighbour_similarity", "z"], rows)
        count_rows = []
        for j, c in enumerate(cls):
            per = [
                sum(1 for s in splits.split(n) if s.label == j or (isinstance(s.label, tuple) and j in s.label))
                for n in ("train", "val", "test")
            ]
            count_rows.append([c, *per])
        write_csv(folder / "class_counts.csv", ["class", "train", "val", "test"], count_rows)
        train_counts = [r[1] for r in count_rows if r[1]]
        summary["outliers"] = {
            "flagged": len(flagged),
            "rule": f"mean similarity to the {NEIGHBOURS} nearest images, robust z < {OUTLIER_Z:g}",
            "imbalance": round(max(train_counts) / min(train_counts), 2) if train_counts else None,
            "seconds": round(time.perf_counter() - t, 2),
        }
        sections["outliers"] = [dict(zip(["path", "split", "label", "score", "z"], row)) for row in rows[:32]]
        sections["counts"] = count_rows
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(folder / "summary.json", summary)
    write_check_report(folder, root, summary, sections)
    summary["out"] = str(folder)
    return summary
