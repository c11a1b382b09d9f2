"""Model-GLUE merge explorer Space: a zoo's similarity heat-map, its clusters, the scores, and the mergekit recipe
Model-GLUE chose (downloadable as YAML).

The result comes from the Hub repo in ``$MERGE_MODEL`` (default: the quickstart's merge), a folder written by
:func:`hubtools.merging.glue.glue`: ``glue_report.json`` (similarity matrix, clusters, per-model and final
scores), ``recipes/<family>.yml`` and, for a single merged family, ``mergekit_config.yml``. Another run's
``glue_report.json`` can be uploaded. The threshold slider re-runs the leader clustering on the stored matrix.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hubtools import spaces

MODEL_ENV = "MERGE_MODEL"
DEFAULT_MODEL = "quickstart/model-glue-synthetic"
REPORT_JSON = "glue_report.json"


@dataclass
class GlueView:
    """One Model-GLUE result: its report and recipes (name -> YAML text)."""

    source: str
    report: dict[str, Any]
    recipes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_repo(cls, repo_id: str) -> GlueView:
        from hubtools.merging.mk import RECIPE_FILENAME

        folder = spaces.snapshot(repo_id)
        report = json.loads((folder / REPORT_JSON).read_text(encoding="utf-8"))
        recipes = {p.stem: p.read_text(encoding="utf-8") for p in sorted((folder / "recipes").glob("*.yml"))}
        if (folder / RECIPE_FILENAME).is_file():
            recipes = {
                f"final ({RECIPE_FILENAME})": (folder / RECIPE_FILENAME).read_text(encoding="utf-8"),
                **recipes,
            }
        return cls(repo_id, report, recipes)

    @classmethod
    def from_report_file(cls, path: str | Path) -> GlueView:
        """An uploaded ``glue_report.json``; its recipes are the families' search results stored in it."""
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            report["clustering"]["similarity"]["all"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{Path(path).name}: not a Model-GLUE {REPORT_JSON} ({err})") from None
        recipes = {
            name: yaml.safe_dump(info["search"]["recipe"], sort_keys=False)
            for name, info in report.get("families", {}).items()
            if info.get("search") and info["search"].get("recipe")
        }
        return cls(Path(path).name, report, recipes)

    @property
    def names(self) -> list[str]:
        return list(self.report["clustering"]["similarity"]["names"])

    @property
    def matrix(self) -> np.ndarray:
        rows = self.report["clustering"]["similarity"]["all"]
        return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)

    @property
    def threshold(self) -> float:
        return float(self.report["clustering"]["threshold"])

    def families(self, threshold: float | None = None) -> list[list[str]]:
        """The stored families, or the leader clustering at ``threshold`` inside each architecture group."""
        from hubtools.merging.cluster import leader_clusters

        clustering = self.report["clustering"]
        if threshold is None:
            return [list(f) for f in clustering["families"]]
        names, sim = self.names, self.matrix
        out: list[list[str]] = []
        for group in clustering["arch_groups"]:
            idx = [names.index(m) for m in group["members"]]
            out.extend(leader_clusters(group["members"], sim[np.ix_(idx, idx)], threshold))
        return out

    def heatmap(self, families: list[list[str]], out_dir: Path) -> str:
        from hubtools.merging.plots import plot_similarity

        path = out_dir / f"similarity_{abs(hash(json.dumps(families))) % 10**8}.png"
        return str(plot_similarity(self.names, self.matrix, path, families=families))

    def score_rows(self) -> list[list[Any]]:
        """[name, kind, search fitness, report fitness] for every model, merged family and the final model."""
        from hubtools.merging.types import fitness

        r = self.report
        rows = [
            [n, "model", fitness(s["search"]), fitness(s["report"])] for n, s in r["single_scores"].items()
        ]
        for name, info in r.get("families", {}).items():
            if info.get("search"):
                rows.append(
                    [
                        f"{name} ({', '.join(info['members'])})",
                        "merged family",
                        fitness(info["scores"]["search"]),
                        fitness(info["scores"]["report"]),
                    ]
                )
        final = r["final"]
        rows.append(["final", "Model-GLUE output", final["search_fitness"], final["report_fitness"]])
        return [[a, b, round(c, 4), round(d, 4)] for a, b, c, d in rows]

    def summary(self) -> str:
        r = self.report
        best = r["best_single"]
        gain = r.get("improvement_over_best_single_pct")
        mix = r.get("mixture")
        return (
            f"**{self.source}**: zoo `{r.get('zoo', '?')}`, {len(self.names)} models, "
            f"{len(r['clustering']['families'])} families at threshold {self.threshold:g}; "
            f"{'a ' + mix['level'] + '-level mixture of the family models' if mix else 'no mixture'}. "
            f"Final report fitness **{r['final']['report_fitness']:.4f}** vs best single model `{best['model']}` "
            f"{best['report']:.4f}" + (f" ({gain:+.1f} %)." if gain is not None else ".")
        )


def recipe_filename(name: str) -> str:
    """The download name of recipe ``name``: ``family_0.yml``, or ``final.yml`` for the root recipe."""
    return f"{name.split(' ')[0]}.yml"


def families_markdown(families: list[list[str]]) -> str:
    return "\n".join(f"- family {i}: " + ", ".join(f"`{m}`" for m in fam) for i, fam in enumerate(families))


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the Model-GLUE output ``repo_id`` (default ``$MERGE_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    out_dir = Path(tempfile.mkdtemp(prefix="merge-space-"))
    start = GlueView.from_repo(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))

    def recipe(view: GlueView, name: str | None):
        if not name:
            return "", None
        path = out_dir / recipe_filename(name)
        path.write_text(view.recipes[name], encoding="utf-8")
        return view.recipes[name], str(path)

    def values(view: GlueView) -> dict[str, Any]:
        """What every component shows for ``view``."""
        families = view.families()
        names = list(view.recipes)
        first = names[0] if names else None
        code, path = recipe(view, first)
        return {
            "summary": view.summary(),
            "threshold": view.threshold,
            "heatmap": view.heatmap(families, out_dir),
            "families": families_markdown(families),
            "scores": view.score_rows(),
            "names": names,
            "recipe": first,
            "code": code,
            "download": path,
        }

    def show(view: GlueView):
        v = values(view)
        return (
            view,
            v["summary"],
            gr.Slider(value=v["threshold"]),
            v["heatmap"],
            v["families"],
            v["scores"],
            gr.Dropdown(choices=v["names"], value=v["recipe"]),
            v["code"],
            v["download"],
        )

    def recluster(view: GlueView, threshold: float):
        families = view.families(float(threshold))
        return view.heatmap(families, out_dir), families_markdown(families)

    def upload(path: str | None):
        if path is None:
            return show(start)
        try:
            return show(GlueView.from_report_file(path))
        except ValueError as err:
            raise gr.Error(str(err)) from None

    first = values(start)
    with gr.Blocks(title="Model-GLUE merge explorer") as demo:
        view = gr.State(start)
        gr.Markdown("# Model-GLUE merge explorer")
        summary = gr.Markdown(first["summary"])
        with gr.Row():
            with gr.Column(scale=3):
                heatmap = gr.Image(
                    first["heatmap"], label="sim_all heat-map (rows ordered by family)", type="filepath"
                )
            with gr.Column(scale=2):
                threshold = gr.Slider(
                    0.0,
                    1.0,
                    value=first["threshold"],
                    step=0.001,
                    label="Clustering threshold (leader clustering on the stored matrix)",
                )
                families = gr.Markdown(first["families"], label="Families")
                uploaded = gr.File(
                    label="Or explore another run: upload its glue_report.json",
                    file_types=[".json"],
                    type="filepath",
                )
        scores = gr.Dataframe(
            first["scores"],
            headers=["model", "kind", "search fitness", "report fitness"],
            label="Scores",
            interactive=False,
        )
        with gr.Row():
            choice = gr.Dropdown(first["names"], value=first["recipe"], label="Recipe Model-GLUE chose")
            download = gr.File(first["download"], label="Recipe as mergekit YAML")
        code = gr.Code(first["code"], language="yaml", label="mergekit recipe")
        outputs = [view, summary, threshold, heatmap, families, scores, choice, code, download]
        uploaded.change(upload, uploaded, outputs)
        threshold.release(recluster, [view, threshold], [heatmap, families])
        choice.change(recipe, [view, choice], [code, download])
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
