"""Long-tail explorer Space: a long-tailed classifier's class distribution, per-class test accuracy, and its
predictions on uploaded images.

The model comes from the Hub repo in ``$LONGTAIL_MODEL`` (default: the quickstart's tiny ResNet trained with
Balanced Softmax on the real brain-MRI patch set, ``quickstart/mri-patches-lt-tiny-resnet``); example images
are test patches of the dataset it names in ``longtail.json``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from hubtools import spaces

MODEL_ENV = "LONGTAIL_MODEL"
DEFAULT_MODEL = "quickstart/mri-patches-lt-tiny-resnet"
GROUP_COLOURS = ("#1f77b4", "#ff7f0e", "#d62728")  # many, medium, few (as in the dataset's chart)
GROUP_NAMES = ("many", "medium", "few")


@dataclass
class LongTailSpace:
    repo_id: str
    model: Any
    info: dict[str, Any]
    test: dict[str, Any]

    @classmethod
    def load(cls, repo_id: str) -> LongTailSpace:
        from hubtools.longtail.trainer import METRICS_JSON, load_model

        folder = spaces.snapshot(repo_id)
        model, info = load_model(folder)
        test = json.loads((folder / METRICS_JSON).read_text(encoding="utf-8"))["test"]
        return cls(repo_id, model, info, test)

    @property
    def groups(self) -> np.ndarray:
        """0 many / 1 medium / 2 few per class id (classes are in long-tail order)."""
        n = len(self.info["cls_num_list"])
        return np.digitize(np.arange(n), [self.info["head"], self.info["medium"]])

    @torch.no_grad()
    def predict(self, image: Image.Image, top: int = 5) -> dict[str, float]:
        """Softmax over classes for one image, resized and normalised as in training; the ``top`` best."""
        from hubtools.longtail.trainer import normalize

        size = self.info["image_size"]
        pixels = torch.from_numpy(np.array(image.convert("RGB").resize((size, size)))).permute(2, 0, 1)
        probs = self.model(normalize(pixels[None])).softmax(-1)[0]
        best = probs.argsort(descending=True)[:top]
        names = self.info["class_names"]
        return {f"{names[i]} ({GROUP_NAMES[self.groups[i]]})": float(probs[i]) for i in best}

    def summary(self) -> str:
        t, counts = self.test, self.info["cls_num_list"]
        return (
            f"**{self.repo_id}**: method `{self.info['method']}`, {len(counts)} classes, train images per class "
            f"{counts[0]} (head) ... {counts[-1]} (tail), imbalance {counts[0] / max(1, counts[-1]):.1f}.\n\n"
            f"| test metric | % |\n|---|---|\n"
            + "".join(
                f"| {k} | {t[k]:.2f} |\n"
                for k in ("top1", "balanced_acc", "many_acc", "medium_acc", "few_acc", "macro_f1")
                if k in t
            )
        )

    def distribution_figure(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = self.info["cls_num_list"]
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.bar(np.arange(len(counts)), counts, color=np.array(GROUP_COLOURS)[self.groups], width=0.85)
        ax.set_yscale("log")
        ax.set_xlabel("class (long-tail order)")
        ax.set_ylabel("train images")
        ax.set_title("Class distribution of the training set")
        _group_legend(ax, plt)
        return spaces.figure_image(fig)

    def accuracy_figure(self):
        """Per-class test recall (accuracy on that class's images), with each group's mean as a line."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recall = np.array(self.test["per_class_recall"], dtype=float)
        x = np.arange(len(recall))
        fig, ax = plt.subplots(figsize=(9, 3))
        ax.bar(x, np.nan_to_num(recall), color=np.array(GROUP_COLOURS)[self.groups], width=0.85)
        for g, name in enumerate(GROUP_NAMES):
            members = x[self.groups == g]
            if len(members) and f"{name}_acc" in self.test:
                ax.hlines(
                    self.test[f"{name}_acc"], members[0] - 0.5, members[-1] + 0.5, colors="k", linestyles="--"
                )
        ax.set_ylim(0, 100)
        ax.set_xlabel("class (long-tail order)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Per-class test accuracy (dashed: group mean)")
        _group_legend(ax, plt)
        return spaces.figure_image(fig)

    def example_files(self, n: int = 4) -> list[str]:
        """A head and a tail test image of the training dataset (when it is a Hub dataset), saved as PNG."""
        import datasets

        config = self.info.get("config") or "default"
        # Only the test split's Parquet files of the config. A model trained on a local folder that is not on
        # this machine has no examples: the Space works without them.
        try:
            test = datasets.load_dataset(
                self.info["dataset"], data_files={"test": f"{config}/test-*.parquet"}, split="test"
            )
        except (OSError, ValueError):
            return []
        labels = np.asarray(test["label"])
        order = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
        picks = order[:: max(1, len(order) // n)][:n]
        out = Path(tempfile.mkdtemp(prefix="longtail-space-"))
        files = []
        for i in picks:
            path = out / f"test_{i}_{self.info['class_names'][labels[i]]}.png"
            test[i]["image"].save(path)
            files.append(str(path))
        return files


def _group_legend(ax, plt) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLOURS]
    ax.legend(handles, list(GROUP_NAMES), fontsize=8)


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the model ``repo_id`` (default ``$LONGTAIL_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    space = LongTailSpace.load(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))

    def run(image):
        if image is None:
            raise gr.Error("Upload an image first.")
        return space.predict(image)

    with gr.Blocks(title="Long-tail explorer") as demo:
        gr.Markdown("# Long-tail explorer\n" + space.summary())
        with gr.Row():
            gr.Image(space.distribution_figure(), label="Class distribution", interactive=False)
            gr.Image(space.accuracy_figure(), label="Per-class accuracy", interactive=False)
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image to classify", image_mode="RGB", height=260)
                button = gr.Button("Predict", variant="primary")
            prediction = gr.Label(label="Top-5 predictions (group in brackets)", num_top_classes=5)
        examples = space.example_files()
        if examples:
            gr.Examples([[f] for f in examples], inputs=[image], label="Test images of the training set")
        button.click(run, image, prediction)
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
