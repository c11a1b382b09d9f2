"""One renderer: a result JSON -> its Markdown page and PNG figures.

Nothing here computes a number; it only lays out what the envelope holds, so the committed
Markdown and PNGs can always be regenerated from the committed JSON (``hubtools bench render``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubtools.bench.envelope import Figure, Panel, Result, Table


def load_result(path: str | Path) -> Result:
    return Result.model_validate(json.loads(Path(path).read_text()))


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.4f}".rstrip("0").rstrip(".")
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines)


def markdown(result: Result) -> str:
    """The result's page: headline, verdict, provenance, every table, links to the figures."""
    r = result
    git = r.git.commit + (" (dirty tree)" if r.git.dirty else "")
    lines = [
        f"# {r.title}" + (" (smoke run)" if r.smoke else ""),
        "",
        f"**Headline:** {r.headline}",
        "",
        f"**Verdict:** {r.verdict}",
        "",
        f"- Command: `{r.command}`",
        f"- Data: {r.data}",
        f"- Commit: `{git}`; code digest `{r.code.digest[:12]}` over {', '.join(r.code.paths)}",
        f"- Device: {r.device.kind} ({r.device.name}), {r.device.cpus} CPUs"
        + (f", {r.device.torch_threads} torch threads" if r.device.torch_threads else "")
        + (f", load average {r.device.load_avg} at the start" if r.device.load_avg is not None else ""),
        f"- Seeds: {', '.join(map(str, r.seeds)) or '–'}; started {r.started_at}; wall time {r.wall_s:.0f} s",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items()),
        "",
    ]
    for t in r.tables:
        lines += [f"## {t.title}", "", markdown_table(t), ""]
    for f in r.figures:
        lines += [f"![{f.title or f.file}]({f.file})", ""]
    lines.append(f"Raw per-seed values: {len(r.runs)} runs in `{r.name}.json`.")
    return "\n".join(lines) + "\n"


def _draw_panel(ax, panel: Panel) -> None:
    import numpy as np

    if panel.kind in ("heatmap", "image"):
        m = np.array([[np.nan if v is None else v for v in row] for row in (panel.matrix or [])], dtype=float)
        im = ax.imshow(m, cmap="viridis" if panel.kind == "heatmap" else "gray", aspect="auto")
        if panel.kind == "heatmap":
            ax.figure.colorbar(im, ax=ax, fraction=0.046)
        if panel.xticklabels:
            ax.set_xticks(range(len(panel.xticklabels)), panel.xticklabels, rotation=90, fontsize=6)
        if panel.yticklabels:
            ax.set_yticks(range(len(panel.yticklabels)), panel.yticklabels, fontsize=6)
        if panel.kind == "image":
            ax.set_axis_off()
    elif panel.kind == "bar":
        ax.set_yscale(panel.yscale)
        n = max(len(panel.series), 1)
        width = 0.8 / n
        labels = [str(x) for x in panel.series[0].x] if panel.series else []
        for i, s in enumerate(panel.series):
            pos = np.arange(len(s.y)) + (i - (n - 1) / 2) * width
            y = [np.nan if v is None else v for v in s.y]
            yerr = None if s.yerr is None else [np.nan if e is None else e for e in s.yerr]
            ax.bar(pos, y, width, yerr=yerr, label=s.label, capsize=2)
        ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 6 else 0, ha="right", fontsize=7)
    else:
        ax.set_xscale(panel.xscale)
        ax.set_yscale(panel.yscale)
        for s in panel.series:
            y = [np.nan if v is None else v for v in s.y]
            if panel.kind == "scatter":
                ax.scatter(s.x, y, label=s.label, s=12)
            elif s.yerr is not None:
                ax.errorbar(s.x, y, yerr=[np.nan if e is None else e for e in s.yerr], fmt=s.style,
                            label=s.label, capsize=2, ms=3)
            else:
                ax.plot(s.x, y, s.style, label=s.label, ms=3)
    for h in panel.hlines:
        ax.axhline(h, color="grey", ls="--", lw=0.8)
    ax.set_title(panel.title, fontsize=9)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.kind in ("line", "scatter", "bar") and any(s.label for s in panel.series):
        ax.legend(fontsize=7)


def draw_figure(fig_spec: Figure, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(fig_spec.panels)
    cols = fig_spec.columns or n
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, fig_spec.panels, strict=False):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    if fig_spec.title:
        fig.suptitle(fig_spec.title, fontsize=10)
    fig.tight_layout()
    # a fixed creation date keeps a re-render byte-identical
    fig.savefig(path, dpi=110, metadata={"Software": None, "Creation Time": None})
    plt.close(fig)


def render(result: Result, out_dir: str | Path) -> list[Path]:
    """Write ``<name>.md`` and every figure's PNG next to the JSON; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{result.name}.md"
    md.write_text(markdown(result))
    written = [md]
    for f in result.figures:
        draw_figure(f, out / f.file)
        written.append(out / f.file)
    return written


def render_file(json_path: str | Path) -> list[Path]:
    path = Path(json_path)
    return render(load_result(path), path.parent)
