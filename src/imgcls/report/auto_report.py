"""The search's part of ``imgcls auto``'s report: every trial on the accuracy-against-time plane (the ones
stopped early marked, and when), the winner and its one held-out score, and the leaderboard."""

from __future__ import annotations

import html
from pathlib import Path

from imgcls.report import figures

STATES = {"complete": ("o", "#1f77b4"), "pruned": ("x", "#d62728")}


def search_figure(rows: list[dict], best: dict, metric: str, path: Path) -> Path:
    """Validation score against the seconds each trial took; pruned trials as crosses, the winner starred."""
    plt = figures.plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, (marker, colour) in STATES.items():
        points = [r for r in rows if r["state"] == state and r[metric] is not None and r["seconds"]]
        if points:
            ax.scatter(
                [r["seconds"] for r in points],
                [r[metric] for r in points],
                marker=marker,
                color=colour,
                label=f"{state} ({len(points)})",
            )
            for r in points:
                ax.annotate(
                    str(r["trial"]), (r["seconds"], r[metric]), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    if best.get("seconds"):
        ax.scatter([best["seconds"]], [best[metric]], marker="*", s=220, color="#2ca02c", label="winner", zorder=3)
    ax.set_xlabel("seconds the trial took (extraction included)")
    ax.set_ylabel(f"best {metric} (validation)")
    ax.set_title("every trial of the search", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return figures._save(fig, path)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


COLUMNS = ("trial", "state", "model", "finetune", "views", "lr", "epochs", "max_epochs", "seconds", "stopped")


def search_section(
    rows: list[dict], best: dict, held_out: dict, *, metric: str, folder: Path, ensemble=None
) -> tuple[str, str]:
    """(HTML, Markdown) of the search. ``ensemble``: ([(trial, weight)...], its validation score) when the
    winner is an ensemble of the best trials."""
    from imgcls.report.build import _img_tag

    picture = search_figure(rows, best, metric, folder / "search.png")
    ran = [r for r in rows if r["state"] in ("complete", "pruned")]
    pruned = [r for r in ran if r["state"] == "pruned"]
    skipped = [r for r in rows if r["state"] == "fail"]
    lines = [
        f"{len(ran)} trials ran ({len(pruned)} stopped early by the pruner), {len(skipped)} were not started or "
        "failed (their reason is in the table).",
        f"The best trial is {best['trial']}: {best['model']} {best['finetune']}"
        + (f" from {best['views']} cached view(s)" if best.get("views") else "")
        + f", lr {best['lr']:.1e}, best validation {metric} {best[metric]:.4f}, chosen on validation only.",
        *(
            [
                "The winner (best/) is an ensemble of trials "
                + ", ".join(f"{t} (weight {w})" for t, w in ensemble[0])
                + f": averaging their probabilities gave validation {metric} {ensemble[1]:.4f} (greedy selection on "
                "the validation split, kept because it beat the best trial alone there)."
            ]
            if ensemble and ensemble[0]
            else [
                "The winner (best/) is that trial's run folder: no ensemble of the best trials beat it on validation."
            ]
        ),
        f"Scored once after the search on the {held_out['split']} split ({held_out['images']} images): "
        f"{held_out['metric']} {held_out['value']:.4f}.",
    ]
    cols = [*COLUMNS[:7], metric, *COLUMNS[7:]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f'<tr class="{"best" if r["trial"] == best["trial"] else ""}">'
        + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols)
        + "</tr>"
        for r in rows
    )
    page = (
        "<h2>The search</h2><ul class='concl'>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        + f"</ul>{_img_tag(picture, 'every trial: validation score against time')}"
        + f"<h3>Leaderboard (every trial of the study, best first)</h3><table><thead><tr>{head}</tr></thead>"
        + f"<tbody>{body}</tbody></table><p class='note'>The results table above shows the winner (best/) "
        "and the next best trials; only the winner is scored on the held-out split.</p>"
    )
    md = ["## The search", "", *[f"- {line}" for line in lines], "", f"![search]({folder.name}/search.png)", ""]
    md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return page, "\n".join(md)
