"""``check-data``'s report.html: suspected label issues (given against suggested label), duplicate pairs
side by side, outliers, class counts; thumbnails embedded, so the page is one self-contained file."""

from __future__ import annotations

import html
import json
from pathlib import Path

from imgcls.core.files import atomic_write_text
from imgcls.report.build import CSS
from imgcls.report.gallery import figure_html


def _thumb(root: Path, path: str, caption: str) -> str:
    return figure_html(str(root / path), caption, alt=path, unreadable="(unreadable)")


def write_check_report(folder: Path, root: Path, summary: dict, sections: dict) -> Path:
    parts = [f"<h1>Data check: {html.escape(root.name)}</h1>"]
    parts.append(
        f"<p class='note'>{html.escape(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}))}</p>"
    )
    if "issues" in sections:
        s = summary["label_issues"]
        parts.append(
            f"<h2>Suspected label issues ({s['flagged']} of {s['checked']}; the {len(sections['issues'])} most suspicious)</h2>"
            "<p class='note'>Out-of-fold predictions of a linear head on the backbone's features, ranked by "
            "cleanlab's label quality score (lowest first). Full list: label_issues.csv. "
            + "".join(
                f"The head's out-of-fold {k.removeprefix('probe_')} is {v:.3f}: the lower it is, the more of "
                "these are the head's own mistakes rather than wrong labels."
                for k, v in s.items()
                if k.startswith("probe_")
            )
            + "</p>"
        )
        parts.append(
            "<div class='gallery'>"
            + "".join(
                _thumb(
                    root,
                    r["path"],
                    f"given <b>{html.escape(r['given'])}</b><br>suggested <b>{html.escape(r['suggested'])}</b>"
                    f"<br>{float(r['score']):.3f}",
                )
                for r in sections["issues"]
            )
            + "</div>"
        )
    if "duplicates" in sections:
        s = summary["duplicates"]
        parts.append(
            f"<h2>Duplicates: {s['exact']} exact, {s['near']} near (cosine ≥ {s['threshold']}), "
            f"{s['leaks']} across training and held-out</h2>"
        )
        parts.append(
            "".join(
                "<div class='row'>"
                + _thumb(root, r["path_a"], html.escape(r["path_a"]))
                + _thumb(
                    root,
                    r["path_b"],
                    f"{html.escape(r['path_b'])}<br>{r['kind']} {r['similarity']}<br>{html.escape(r['splits'])}",
                )
                + "</div>"
                for r in sections["duplicates"]
            )
            or "<p>none</p>"
        )
    if "outliers" in sections:
        s = summary["outliers"]
        parts.append(f"<h2>Outliers ({s['flagged']}: {html.escape(s['rule'])})</h2>")
        parts.append(
            "<div class='gallery'>"
            + "".join(
                _thumb(root, r["path"], f"{html.escape(r['label'] or r['split'])}<br>{r['score']} (z {r['z']})")
                for r in sections["outliers"]
            )
            + "</div>"
            if sections["outliers"]
            else "<p>none</p>"
        )
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in sections["counts"]
        )
        parts.append(
            f"<h3>Images per class (imbalance, largest/smallest training class: {s['imbalance']})</h3>"
            f"<table><thead><tr><th>class</th><th>train</th><th>val</th><th>test</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>imgcls check-data: "
        f"{html.escape(root.name)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    atomic_write_text(folder / "report.html", page)
    return folder / "report.html"
