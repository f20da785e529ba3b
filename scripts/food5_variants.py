#!/usr/bin/env python3
"""Other shapes of the same photos, for measuring imgcls on data as users bring it.

From a train/<class>/*.jpg + test/<class>/*.jpg folder (../shared/data/food5, or the tests' generated
copy) it writes, under OUT (a temporary folder; never commit the result):

  csv/         Kaggle style: train.csv (id,label) + train_images/<id>.jpg, test.csv (id,label) +
               test_images/, sample_submission.csv (id,label)
  onehot/      labels.csv (image_id,<class>...,one 0/1 column per class) + images/ (test photos listed
               in test.csv the same way)
  multilabel/  2x2 collages of 1-3 classes: train.csv (image_name,tags) + train-jpg/, test.csv + test-jpg/
  noisy/       the train/ + test/ layout with --noise of the training labels flipped to another class;
               flipped.csv lists them (path,given,true)

Images are symbolic links to the originals where the file is used as it is (csv, onehot, noisy) and new
JPEGs where it is not (the collages).

  python scripts/food5_variants.py ../shared/data/food5 /tmp/food5-variants [--kinds csv,onehot] [--noise 0.05]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
from pathlib import Path

KINDS = ("csv", "onehot", "multilabel", "noisy")


def photos(root: Path, split: str) -> dict[str, list[Path]]:
    folder = root / split
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for d in sorted(folder.iterdir())
        if d.is_dir()
    }


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def kaggle_csv(src: Path, out: Path, rng: random.Random) -> None:
    for split, images, table in (("train", "train_images", "train.csv"), ("test", "test_images", "test.csv")):
        rows = []
        for cls, files in photos(src, split).items():
            for f in files:
                rows.append([f"{split}_{cls}_{f.stem}", cls])
                link(f, out / images / f"{rows[-1][0]}{f.suffix.lower()}")
        rng.shuffle(rows)  # a CSV's order says nothing about the classes
        write_csv(out / table, ["id", "label"], rows)
        if split == "test":
            write_csv(out / "sample_submission.csv", ["id", "label"], [[r[0], ""] for r in rows])


def one_hot(src: Path, out: Path, rng: random.Random) -> None:
    classes = sorted(photos(src, "train"))
    for split, table in (("train", "labels.csv"), ("test", "test.csv")):
        rows = []
        for cls, files in photos(src, split).items():
            for f in files:
                name = f"{split}-{cls}-{f.stem}"
                rows.append([name, *[int(c == cls) for c in classes]])
                link(f, out / "images" / f"{name}{f.suffix.lower()}")
        rng.shuffle(rows)
        write_csv(out / table, ["image_id", *classes], rows)


def collages(src: Path, out: Path, rng: random.Random, size: int = 224) -> None:
    """Each collage: 4 tiles of size/2 from 1-3 classes (every chosen class in at least one tile)."""
    from PIL import Image

    for split, folder in (("train", "train-jpg"), ("test", "test-jpg")):
        by_class = photos(src, split)
        classes = sorted(by_class)
        pool = {c: list(fs) for c, fs in by_class.items()}
        for fs in pool.values():
            rng.shuffle(fs)
        n = sum(len(fs) for fs in by_class.values()) // 2  # each photo used about twice
        rows = []
        for i in range(n):
            chosen = rng.sample(classes, rng.choice((1, 2, 3)))
            tiles = chosen + [rng.choice(chosen) for _ in range(4 - len(chosen))]
            rng.shuffle(tiles)
            canvas = Image.new("RGB", (size, size))
            for k, cls in enumerate(tiles):
                files = pool[cls]
                f = files[(i * 4 + k) % len(files)]
                with Image.open(f) as im:
                    tile = im.convert("RGB").resize((size // 2, size // 2), Image.BILINEAR)
                canvas.paste(tile, ((k % 2) * size // 2, (k // 2) * size // 2))
            name = f"{split}_{i:05d}"
            (out / folder).mkdir(parents=True, exist_ok=True)
            canvas.save(out / folder / f"{name}.jpg", quality=90)
            rows.append([name, " ".join(sorted(set(chosen)))])
        write_csv(out / ("train.csv" if split == "train" else "test.csv"), ["image_name", "tags"], rows)


def noisy(src: Path, out: Path, rng: random.Random, noise: float) -> None:
    by_class = photos(src, "train")
    classes = sorted(by_class)
    every = [(cls, f) for cls, fs in by_class.items() for f in fs]
    flipped = set(rng.sample(range(len(every)), round(noise * len(every))))
    listed = []
    for k, (cls, f) in enumerate(every):
        given = rng.choice([c for c in classes if c != cls]) if k in flipped else cls
        link(f, out / "train" / given / f.name)
        if k in flipped:
            listed.append([f"train/{given}/{f.name}", given, cls])
    for cls, fs in photos(src, "test").items():
        for f in fs:
            link(f, out / "test" / cls / f.name)
    write_csv(out / "flipped.csv", ["path", "given", "true"], listed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="train/<class>/ + test/<class>/ folder (e.g. ../shared/data/food5)")
    p.add_argument("out", type=Path, help="new folder for the variants")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from {', '.join(KINDS)}")
    p.add_argument("--noise", type=float, default=0.05, help="fraction of training labels flipped in noisy/")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not (a.src / "train").is_dir() or not 0 <= a.noise < 1:
        p.error(f"need SRC/train and SRC/test, kinds from {KINDS}, 0 <= noise < 1 (unknown: {unknown})")
    for kind in kinds:
        target = a.out / kind
        if target.exists():
            shutil.rmtree(target)
        rng = random.Random(a.seed)
        if kind == "csv":
            kaggle_csv(a.src, target, rng)
        elif kind == "onehot":
            one_hot(a.src, target, rng)
        elif kind == "multilabel":
            collages(a.src, target, rng)
        else:
            noisy(a.src, target, rng, a.noise)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
