"""RetiZero Space: zero-shot recognition of a fundus photo from written labels, and image-to-image retrieval.

The model comes from the Hub repo in ``$RETIZERO_MODEL`` (default: the quickstart's ``quickstart/retizero-tiny``).
The retrieval gallery is built from the only real retinal images that ship offline: tiles of scikit-image's
fundus photo (``skimage.data.retina()``, CC0) and its diabetic-retinopathy lesion crop (``microaneurysms()``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hubtools import spaces

MODEL_ENV = "RETIZERO_MODEL"
DEFAULT_MODEL = "quickstart/retizero-tiny"
DEFAULT_LABELS = "normal fundus, glaucoma, diabetic retinopathy, age-related macular degeneration"
EXAMPLE_NAME = "fundus (centre crop)"


def example_image() -> Image.Image:
    """The real fundus photo of scikit-image, cropped to the disc and macula (the quickstart's test image)."""
    from skimage import data

    return Image.fromarray(data.retina()[200:1200, 200:1200])


def gallery_images() -> dict[str, Image.Image]:
    """Name -> image: the example itself, a 3x3 grid of tiles of the whole photo, and the lesion crop."""
    from skimage import data

    retina = data.retina()
    tiles = {EXAMPLE_NAME: example_image()}
    step = retina.shape[0] // 3
    for r in range(3):
        for c in range(3):
            tiles[f"tile r{r} c{c}"] = Image.fromarray(
                retina[r * step : (r + 1) * step, c * step : (c + 1) * step]
            )
    tiles["microaneurysms (lesion crop)"] = Image.fromarray(data.microaneurysms()).convert("RGB")
    return tiles


@dataclass
class RetinalSpace:
    """The loaded model and processor, and the gallery's retrieval features."""

    repo_id: str
    model: torch.nn.Module
    processor: object
    names: list[str]
    images: list[Image.Image]
    features: torch.Tensor

    @classmethod
    def load(cls, repo_id: str) -> RetinalSpace:
        from transformers import AutoModel

        from hubtools.models.retizero import RetiZeroProcessor  # also registers the family with AutoModel

        model = AutoModel.from_pretrained(repo_id).eval()
        processor = RetiZeroProcessor.from_pretrained(repo_id)
        gallery = gallery_images()
        names, images = list(gallery), list(gallery.values())
        space = cls(repo_id, model, processor, names, images, torch.empty(0))
        space.features = space.retrieval_features(images)
        return space

    @torch.no_grad()
    def retrieval_features(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images])["pixel_values"]
        return self.model.get_retrieval_features(pixels)

    def classify(self, image: Image.Image, labels: str, template: str) -> dict[str, float]:
        """Zero-shot probabilities over the comma-separated ``labels``."""
        from hubtools.models.retizero.zero_shot import zero_shot_classify

        names = [n.strip() for n in labels.split(",") if n.strip()]
        probs = zero_shot_classify(self.model, self.processor, [image.convert("RGB")], names, [template])[0]
        return {n: float(p) for n, p in zip(names, probs, strict=True)}

    def retrieve(self, image: Image.Image, k: int) -> list[tuple[Image.Image, str]]:
        """The ``k`` gallery images most similar to ``image`` under RetiZero's retrieval similarity."""
        from hubtools.models.retizero.zero_shot import retizero_similarity

        query = self.retrieval_features([image])
        # Row 0 = the query against every gallery item (the anchor's similarity is not symmetric).
        scores = retizero_similarity(torch.cat([query, self.features]))[0, 1:].numpy()
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.images[i], f"{self.names[i]} (similarity {scores[i]:.3f})") for i in order]


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the model ``repo_id`` (default ``$RETIZERO_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    space = RetinalSpace.load(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))
    example = Path(tempfile.mkdtemp(prefix="retizero-space-")) / "skimage_retina.png"
    example_image().save(example)

    def run(image, labels: str, template: str, k: int):
        if image is None:
            raise gr.Error("Upload a fundus photograph first.")
        if "{}" not in template:
            raise gr.Error("The prompt template needs a {} where the label goes.")
        try:
            scores = space.classify(image, labels, template)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return scores, space.retrieve(image, int(k))

    with gr.Blocks(title="RetiZero: retinal zero-shot recognition and retrieval") as demo:
        gr.Markdown(
            f"# RetiZero: zero-shot recognition and image retrieval\n"
            f"Model: `{space.repo_id}`. Upload a fundus photograph, type the conditions to score (comma-"
            "separated) and press **Run**. Retrieval searches a gallery of tiles of scikit-image's real fundus "
            "photo. **Not for clinical use**: the quickstart model was trained on Fashion-MNIST captions, so its "
            "retinal scores show the mechanics, not a diagnosis."
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Fundus photograph")
                labels = gr.Textbox(DEFAULT_LABELS, label="Candidate labels (comma-separated)")
                template = gr.Textbox("A fundus photograph of {}", label="Prompt template")
                k = gr.Slider(1, len(space.names), value=5, step=1, label="Images to retrieve")
                button = gr.Button("Run", variant="primary")
            with gr.Column():
                scores = gr.Label(label="Zero-shot probabilities", num_top_classes=10)
                found = gr.Gallery(label="Most similar gallery images", columns=5, height="auto")
        gr.Examples([[str(example)]], inputs=[image], label="Example: skimage.data.retina() (CC0)")
        button.click(run, [image, labels, template, k], [scores, found])
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
