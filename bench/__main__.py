"""``python -m bench``: run the measures and print the table (``--json FILE`` also writes it)."""

from __future__ import annotations

import sys

from imgcls.cli import OneLineParser
from imgcls.core.errors import ImgclsError


def main(argv: list[str] | None = None) -> int:
    from bench.run import run_bench

    p = OneLineParser(prog="python -m bench", description="imgcls's fast paths against a reference-style loop")
    p.add_argument("--quick", action="store_true", help="a run of about a minute (CI)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--images", type=int, help="training images (default 512, quick 64)")
    p.add_argument("--batch-size", type=int, help="batch size for both sides (default 64, quick 32)")
    p.add_argument("--workers", type=int, help="DataLoader workers for both sides (default cores - 1)")
    p.add_argument(
        "--accelerator",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: both sides on the GPU (head-only, full fine-tuning of EfficientNet-B0, ViT-B/16 and "
        "attn_cnn, inference, data pipeline, GPU busy time)",
    )
    p.add_argument("--only", help="comma-separated measures to run (default: all for the accelerator)")
    p.add_argument("--image-size", type=int, default=224, help="px (224: the reference; less only for smoke runs)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        results = run_bench(
            quick=args.quick,
            images=args.images,
            batch_size=args.batch_size,
            workers=args.workers,
            json_path=args.json,
            accelerator=args.accelerator,
            only=[m.strip() for m in args.only.split(",") if m.strip()] if args.only else None,
            image_size=args.image_size,
        )
    except ImgclsError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    missed = [m["name"] for m in results["measures"] if not m["met"]]
    if missed:
        print(f"targets not met: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
