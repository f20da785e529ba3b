"""Build report.html (self-contained), report.md and summary.csv from a comparison's run folders."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from imgcls.core.files import atomic_write_text
from imgcls.core.tables import write_csv
from imgcls.report import figures
from imgcls.report.collect import Variant, collect

COLUMNS = [  # (key, header, format); {split} is the split the evaluation columns were computed on
    ("variant", "variant", "{}"),
    ("params", "params", "{:,}"),
    ("trainable_params", "trainable params", "{:,}"),
    ("gflops", "GFLOPs/img", "{:.3f}"),
    ("best_val_acc", "best val acc (validation)", "{:.4f}"),
    ("best_epoch", "best epoch", "{}"),
    ("heldout_acc", "top-1 ({split})", "{:.4f}"),
    ("macro_f1", "macro-F1 ({split})", "{:.4f}"),
    ("train_seconds", "total train time (s)", "{:.1f}"),
    ("feature_seconds", "of which feature extraction (s)", "{:.1f}"),
    ("seconds_per_epoch", "s / epoch", "{:.2f}"),
    ("inference_ips", "inference img/s", "{:.1f}"),
    ("flags", "flags", "{}"),
]


# Multi-label comparisons rank by mean average precision; the macro-F1 is at the tuned thresholds.
MULTILABEL_COLUMNS = [
    ("best_val_mAP", "best val mAP (validation)", "{:.4f}")
    if key == "best_val_acc"
    else ("heldout_mAP", "mAP ({split})", "{:.4f}")
    if key == "heldout_acc"
    else ("f1_macro", "macro-F1 ({split})", "{:.4f}")
    if key == "macro_f1"
    else (key, header, fmt)
    for key, header, fmt in COLUMNS
]


def columns(variants: list[Variant]) -> list[tuple[str, str, str]]:
    return MULTILABEL_COLUMNS if any(v.multilabel for v in variants) else COLUMNS


def table_row(v: Variant) -> dict:
    s = v.summary
    if v.multilabel:
        scores = {
            "best_val_mAP": s["best_val_mAP"],
            "heldout_mAP": v.eval["mAP"] if v.eval else None,
            "f1_macro": v.eval["f1_macro"] if v.eval else None,
        }
    else:
        scores = {
            "best_val_acc": s["best_val_acc"],
            "heldout_acc": v.eval["top1"] if v.eval else None,
            "macro_f1": v.eval["macro_f1"] if v.eval else None,
        }
    return {
        "variant": v.name,
        "model": v.model,
        "params": s["params"],
        "trainable_params": s["trainable_params"],
        "gflops": s["gflops"],
        **scores,
        "best_epoch": s["best_epoch"],
        "eval_split": v.eval_split,
        "train_seconds": s["train_seconds"],
        "feature_seconds": s.get("feature_cache_seconds", 0.0),
        "flags": "; ".join(v.flags) or None,
        "seconds_per_epoch": s["seconds_per_epoch"],
        "epochs": s["epochs_completed"],
        "inference_ips": v.inference["images_per_s"] if v.inference else None,
    }


def _fmt(fmt: str, value) -> str:
    return "–" if value is None else fmt.format(value)


def conclusion(variants: list[Variant]) -> list[str]:
    """Sentences generated from the numbers alone. Flagged variants (loss barely moved, input far below
    the pretrained resolution) are named but not ranked."""
    split = _eval_split(variants)
    multi = any(v.multilabel for v in variants)
    if split:
        metric = f"{'mAP' if multi else 'top-1'} on {split}"
    else:
        metric = "best validation mAP" if multi else "best validation accuracy"
    trusted = [v for v in variants if not v.flags] or variants
    t = lambda v: v.summary["train_seconds"]  # noqa: E731
    best = max(trusted, key=lambda v: v.score)
    fastest = min(trusted, key=t)
    lines = [f"Most accurate: **{best.name}** ({metric} {best.score:.2%}, {t(best):.0f} s of training in all)."]
    if fastest is best:
        lines.append(f"It is also the fastest to train ({t(fastest):.0f} s): no trade-off to make here.")
    else:
        lines.append(
            f"Fastest to train: **{fastest.name}** ({t(fastest):.0f} s, {t(best) / t(fastest):.1f}× less than "
            f"{best.name}) at {fastest.score:.2%}, {100 * (fastest.score - best.score):+.1f} points."
        )
    with_ips = [v for v in trusted if v.inference]
    if with_ips:
        quick = max(with_ips, key=lambda v: v.inference["images_per_s"])
        lines.append(
            f"Fastest inference: **{quick.name}** ({quick.inference['images_per_s']:.0f} images/s on "
            f"{quick.inference['device']}, {quick.inference.get('engine', 'pytorch')})."
        )
    # Pareto front on (accuracy up, training time down): the variants worth considering.
    front = [
        v
        for v in trusted
        if not any(o.score >= v.score and t(o) <= t(v) and (o.score > v.score or t(o) < t(v)) for o in trusted)
    ]
    front.sort(key=t)
    if len(front) > 1:
        steps = ", then ".join(f"{v.name} ({v.score:.2%}, {t(v):.0f} s)" for v in front)
        lines.append(f"Accuracy-versus-time trade-off (each buys more accuracy with more time): {steps}.")
    dominated = [v.name for v in trusted if v not in front]
    if dominated:
        lines.append(f"Dominated (another variant is at least as accurate and trains faster): {', '.join(dominated)}.")
    for v in variants:
        if v.flags:
            lines.append(
                f"Not ranked: **{v.name}** — {'; '.join(v.flags)}: its {v.score:.2%} says little about the model."
            )
    return lines


def _eval_split(variants: list[Variant]) -> str | None:
    """The split the evaluation columns come from, when every variant has one and they agree."""
    splits = {v.eval_split for v in variants}
    return splits.pop() if len(splits) == 1 and None not in splits else None


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _variant_html(v: Variant, conf: Path | None, pc: Path, root: Path) -> str:
    """One variant's section: confusion matrix and per-class accuracy (multi-label: per-label AP figure
    and table), its gallery, and where it looks."""
    from imgcls.report.gallery import gallery_html, multilabel_gallery_html

    name = v.name
    if v.multilabel:
        cells = ["class", "support", "ap", "precision", "recall", "f1", "threshold"]
        body = "".join(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(r[c]) if c in ('class', 'support') else '-' if r[c] is None else f'{r[c]:.3f}')}</td>"
                for c in cells
            )
            + "</tr>"
            for r in v.eval["per_label"]
        )
        table = f"<table><thead><tr>{''.join(f'<th>{c}</th>' for c in cells)}</tr></thead><tbody>{body}</tbody></table>"
        pictures = f"<div class='grid'>{_img_tag(pc, 'per-label AP ' + name)}<div>{table}</div></div>"
        gallery = multilabel_gallery_html(v.predictions) if v.predictions else ""
    else:
        pictures = f"<div class='grid'>{_img_tag(conf, 'confusion matrix ' + name)}{_img_tag(pc, 'per-class accuracy ' + name)}</div>"
        gallery = gallery_html(v.predictions) if v.predictions else ""
    return f"<h3>{html.escape(name)}</h3>{pictures}{gallery}{_explain_html(root / name)}"


def _explain_html(run_dir: Path) -> str:
    pictures = sorted((run_dir / "explain").glob("*.png"))[:2]
    if not pictures:
        return ""
    tags = "".join(_img_tag(p, f"where {run_dir.name} looks: {p.stem}") for p in pictures)
    return f"<h4>Where it looks (imgcls explain)</h4><div class='grid'>{tags}</div>"


def _md_bold_to_html(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.85rem;width:100%}th,td{padding:.35rem .5rem;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f5f7}tr.best td{background:#eef7ee;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.5rem 0}.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.note{color:#666;font-size:.85rem}ul.concl li{margin:.3rem 0}
.gallery,.row{display:flex;flex-wrap:wrap;gap:.4rem}figure.thumb{margin:0;width:124px;font-size:.7rem;text-align:center}
figure.thumb img{margin:0;border:2px solid #eee}.gallery figure.thumb img{border-color:#e8a0a0}
.correct .cls{display:inline-block;margin:0 1rem .5rem 0;vertical-align:top;font-size:.8rem}
"""


def build_report(
    root: str | Path,
    *,
    runs: list[Path] | None = None,
    title: str = "Model comparison",
    extra_html: str = "",
    extra_md: str = "",
) -> Path:
    """report.html, report.md and summary.csv of ``root``'s run folders (or of ``runs``); ``extra_*``: a
    section after the results (auto's search)."""
    root = Path(root)
    variants = collect(root, runs)
    files = root / "report_files"
    files.mkdir(exist_ok=True)
    rows = [table_row(v) for v in variants]

    write_csv(root / "summary.csv", list(rows[0]), [["" if r[k] is None else r[k] for k in rows[0]] for r in rows])

    figs = {
        "curves": figures.curves(variants, files / "curves.png"),
        "overlay": figures.val_overlay(variants, files / "val_acc_overlay.png"),
        "tradeoff": figures.tradeoff(variants, files / "tradeoff.png"),
    }
    per_variant = {}
    for v in variants:
        if v.eval:
            per_variant[v.name] = (
                None if v.multilabel else figures.confusion(v, files / f"confusion_{v.name}.png"),
                figures.per_class(v, files / f"per_class_{v.name}.png"),
            )
    lines = conclusion(variants)
    best = max(variants, key=lambda v: v.score).name
    data = variants[0].summary
    subtitle = (
        f"{len(variants)} variants · {data.get('num_classes')} classes · {data.get('train_images')} training / "
        f"{data.get('val_images')} validation images · {'/'.join(str(x) for x in sorted({v.summary.get('image_size') for v in variants}))} px · device {data.get('device')}"
    )

    # Markdown
    md = [f"# {title}: {root.name}", "", subtitle, "", "## Conclusion", ""]
    md += [f"- {line}" for line in lines]
    cols = columns(variants)
    headers = [h.format(split=_eval_split(variants) or "per variant") for _, h, _ in cols]
    md += ["", "## Results", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(f, r[k]) for k, _, f in cols) + " |" for r in rows]
    md += ["", extra_md] if extra_md else []
    md += [
        "",
        "## Curves",
        "",
        "![curves](report_files/curves.png)",
        "",
        "![validation accuracy](report_files/val_acc_overlay.png)",
        "",
        "![trade-off](report_files/tradeoff.png)",
        "",
    ]
    for name, (conf, pc) in per_variant.items():
        shown = [f"![confusion]({conf.relative_to(root)})"] if conf else []
        md += [f"### {name}", "", " ".join([*shown, f"![per-class]({pc.relative_to(root)})"]), ""]
    atomic_write_text(root / "report.md", "\n".join(md) + "\n")

    # HTML, self-contained
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body_rows = "".join(
        f'<tr class="{"best" if r["variant"] == best else ""}">'
        + "".join(f"<td>{html.escape(_fmt(f, r[k]))}</td>" for k, _, f in cols)
        + "</tr>"
        for r in rows
    )
    by_name = {v.name: v for v in variants}
    sections = "".join(_variant_html(by_name[name], conf, pc, root) for name, (conf, pc) in per_variant.items())
    split = _eval_split(variants)
    split_note = (
        f"top-1, macro-F1, the per-class figures and the galleries are computed on the {split} split; "
        if split
        else "each variant's evaluation split is in summary.csv (eval_split); "
    )
    engines = ", ".join(sorted({v.inference.get("engine", "pytorch") for v in variants if v.inference})) or "none"
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}: {html.escape(root.name)}</title><style>{CSS}</style></head><body>
<h1>{html.escape(title)}: {html.escape(root.name)}</h1><p class="note">{html.escape(subtitle)}</p>
<h2>Conclusion</h2><ul class="concl">{"".join(f"<li>{_md_bold_to_html(line)}</li>" for line in lines)}</ul>
<h2>Results</h2><table><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>
<p class="note">{split_note}total train time is every second the variant needed: the epochs (training + validation)
plus computing the frozen part's cached features, shown separately, and decoding the image store of
--data-pipeline tensor (reused from the cache or not; compilation,
when --compile is on, falls in the first epoch); flagged variants are not ranked;
inference img/s is the forward pass at batch 32 on this machine, decoding excluded, in the engine that evaluate, predict and
serve use ({html.escape(engines)}). Every number comes from the
variant's metrics.csv, summary.json, eval/ and inference.json.</p>{extra_html}
<h2>Training curves</h2>{_img_tag(figs["curves"], "training curves")}
<div class="grid">{_img_tag(figs["overlay"], "validation accuracy overlay")}{_img_tag(figs["tradeoff"], "trade-off")}</div>
<h2>Per variant: confusion matrix, per-class accuracy, errors and examples</h2>{sections}
</body></html>"""
    atomic_write_text(root / "report.html", page)
    return root / "report.html"
