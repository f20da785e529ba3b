#!/usr/bin/env python3
"""Plant altered copies of training photos among the held-out photos of a train/<class>/ + test/<class>/
folder, to measure `imgcls check-data --duplicates` (and leakage) on real photos.

Each planted file is one training photo re-encoded as JPEG quality 60, resized to half its size, cropped
to its central 90%, or all three; `planted.csv` (path,source,alteration) lists them. The folder is
changed in place: run it on a copy (e.g. food5_variants.py's noisy/ output, whose files are links).

  python scripts/plant_copies.py /tmp/food5-variants/noisy --count 20
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from PIL import Image

ALTERATIONS = ("reencoded", "resized", "cropped", "all")


def alter(image: Image.Image, how: str) -> Image.Image:
    if how in ("resized", "all"):
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BICUBIC)
    if how in ("cropped", "all"):
        w, h = image.size
        image = image.crop((round(w * 0.05), round(h * 0.05), round(w * 0.95), round(h * 0.95)))
    return image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    photos = sorted(p for p in (a.root / "train").rglob("*.jpg"))
    rows = []
    for k, source in enumerate(rng.sample(photos, a.count)):
        how = ALTERATIONS[k % len(ALTERATIONS)]
        target = a.root / "test" / source.parent.name / f"planted_{k}_{how}.jpg"
        with Image.open(source) as im:
            alter(im.convert("RGB"), how).save(target, quality=60)
        rows.append([target.relative_to(a.root).as_posix(), source.relative_to(a.root).as_posix(), how])
    with open(a.root / "planted.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "source", "alteration"])
        w.writerows(rows)
    print(f"planted {len(rows)} copies in {a.root / 'test'}; listed in {a.root / 'planted.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
