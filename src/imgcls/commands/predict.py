"""``imgcls predict``: a CSV of predictions for files or folders, labelled or not.

Single-label: ``Id,Category`` (the class as the data labels it: its name, or for Food-11's flat
``<index>_<n>.jpg`` layout its index, the Kaggle submission form) plus ``--topk`` columns. Multi-label: ``Id,Labels`` (the labels above their thresholds, space-separated) plus one
probability column per label. ``--submission sample_submission.csv``: the sample's columns and row
order, filled in (a label column gets the predicted class or labels, class columns get probabilities).
"""

from __future__ import annotations

from pathlib import Path

from imgcls.core.errors import ImgclsError
from imgcls.core.tables import csv_text, write_csv
from imgcls.data.layouts import samples_with_ids
from imgcls.engine.predictor import load_predictor, predict_samples


def predict(
    ref: str,
    inputs: list[str],
    *,
    out: str | Path,
    topk: int = 0,
    batch_size: int = 64,
    workers: int | None = None,
    tta: str | None = None,
    submission: str | None = None,
    engine: str | None = None,
    force: bool = False,
) -> dict:
    out = Path(out)
    if out.is_dir():
        raise ImgclsError(f"--out {out} is a folder; give the CSV file to write, e.g. {out / 'preds.csv'}")
    loaded = load_predictor(ref, engine=engine)  # the model first: a bad model reference is the error to report
    if topk > len(loaded.classes):  # the lower bound is the option's; the upper one is the model's
        raise ImgclsError(f"--topk must be between 0 and {len(loaded.classes)}, got {topk}")
    pairs = samples_with_ids(inputs)
    sample_rows = _read_submission(submission, loaded) if submission else None
    samples = [s for s, _ in pairs]
    _check_out(
        out, [s.path for s in samples] + ([submission] if submission else []), _header(loaded, topk, sample_rows), force
    )
    probs, kept = predict_samples(loaded, samples, batch_size=batch_size, workers=workers, tta=tta)
    if not kept:
        raise ImgclsError(f"none of the {len(samples)} input file(s) could be decoded as an image; nothing predicted")
    out.parent.mkdir(parents=True, exist_ok=True)
    ids = [pairs[i][1] for i in kept]
    if sample_rows is not None:
        header, rows = _fill_submission(sample_rows, loaded, ids, probs, submission)
    elif loaded.multilabel:
        decided = loaded.decide(probs)
        header = _header(loaded, topk, None)
        rows = [
            [i, " ".join(c for c, d in zip(loaded.classes, decided[r]) if d), *(f"{float(p):.6f}" for p in probs[r])]
            for r, i in enumerate(ids)
        ]
    else:
        header, rows = _single_rows(loaded, ids, probs, topk)
    write_csv(out, header, rows)
    skipped = [samples[i].path for i in sorted(set(range(len(samples))) - set(kept))]
    return {
        "out": str(out),
        "predicted": len(kept),
        "skipped": skipped,
        "first": _first(loaded, ids, probs),
        "engine": loaded.describe(),
    }


def _header(loaded, topk: int, sample_rows) -> list[str]:
    if sample_rows is not None:
        return list(sample_rows[0])
    if loaded.multilabel:
        return ["Id", "Labels", *loaded.classes]
    return ["Id", "Category"] + [f"top{j}_{kind}" for j in range(1, topk + 1) for kind in ("class", "prob")]


def _check_out(out: Path, inputs: list[str], header: list[str], force: bool) -> None:
    """Never write over an input (an image, the sample submission being read), and over a file that is not
    a predictions CSV of this form only with ``--force``."""
    import os

    if out.exists():
        target = os.path.realpath(out)
        if any(os.path.realpath(p) == target for p in inputs):
            raise ImgclsError(f"--out {out} is one of the inputs; give another file to write the predictions to")
        if not force and _first_line(out) != csv_text(header, []).rstrip("\r\n"):
            raise ImgclsError(
                f"--out {out} exists and is not a predictions CSV of this form; choose another file "
                "(or pass --force to replace it)"
            )


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            return fh.readline(65536).rstrip("\r\n")
    except OSError:
        return ""


def _single_rows(loaded, ids: list[str], probs, topk: int) -> tuple[list[str], list[list]]:
    top_p, top_i = probs.topk(max(topk, 1), dim=1)
    header = _header(loaded, topk, None)
    rows = []
    for row, name in enumerate(ids):
        line = [name, loaded.label(int(top_i[row, 0]))]
        for j in range(topk):
            line += [loaded.classes[int(top_i[row, j])], f"{float(top_p[row, j]):.6f}"]
        rows.append(line)
    return header, rows


def _first(loaded, ids: list[str], probs) -> list[tuple[str, str, float]]:
    """What the command prints: a few (id, answer, probability)."""
    out = []
    for r in range(min(len(ids), 5)):
        if loaded.multilabel:
            labels = [c for c, d in zip(loaded.classes, loaded.decide(probs[r : r + 1])[0]) if d]
            out.append((ids[r], " ".join(labels) or "(no label)", float(probs[r].max())))
        else:
            p, i = probs[r].max(0)
            out.append((ids[r], loaded.classes[int(i)], float(p)))
    return out


def _read_submission(path: str, loaded) -> tuple[list[str], list[dict]]:
    from imgcls.core.tables import read_table

    table = Path(path)
    if not table.is_file():
        raise ImgclsError(f"--submission {path}: no such file")
    found = read_table(table)
    header, rows = found.header, found.rows
    if len(header) < 2:
        raise ImgclsError(f"{path}: expected an id column and at least one answer column; got {', '.join(header)}")
    answer = header[1:]
    if len(answer) > 1 and not set(answer) <= set(loaded.classes):
        unknown = sorted(set(answer) - set(loaded.classes))
        raise ImgclsError(f"{path}: columns {', '.join(unknown)} are not among the model's classes")
    return header, rows


def _fill_submission(sample, loaded, ids: list[str], probs, path: str) -> tuple[list[str], list[list]]:
    """The sample's rows in its order, each answered from the image whose id (file name with or without
    extension, or path relative to the input folder) matches its first column."""
    header, rows = sample
    by_id: dict[str, int] = {}
    for r, name in enumerate(ids):
        by_id[name] = r
        by_id.setdefault(Path(name).stem, r)
        by_id.setdefault(Path(name).name, r)
    missing = [row[header[0]] for row in rows if row[header[0]] not in by_id and Path(row[header[0]]).stem not in by_id]
    if missing:
        shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise ImgclsError(f"{path}: {len(missing)} id(s) have no image among the inputs: {shown}")
    answer = header[1:]
    index = {c: i for i, c in enumerate(loaded.classes)}
    out = []
    for row in rows:
        key = row[header[0]]
        r = by_id.get(key, by_id.get(Path(key).stem))
        if len(answer) == 1 and answer[0] not in index:  # one answer column: the class, or the labels
            if loaded.multilabel:
                value = " ".join(c for c, d in zip(loaded.classes, loaded.decide(probs[r : r + 1])[0]) if d)
            else:
                value = loaded.label(int(probs[r].argmax()))
            out.append([key, value])
        else:  # one column per class: probabilities
            out.append([key, *(f"{float(probs[r, index[c]]):.6f}" for c in answer)])
    return header, out
