"""Semi-supervised segmentation Space: segment an image and show the threshold confidence map beside the mask.

The model comes from the Hub repo in ``$SEMISEG_MODEL`` (default: the quickstart's ``quickstart/semiseg-nuclei-bpl``).
The example image is a tile of stardist's real fluorescence nuclei image (``img2d.tif``, DSB2018).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hubtools import spaces

MODEL_ENV = "SEMISEG_MODEL"
DEFAULT_MODEL = "quickstart/semiseg-nuclei-bpl"


def example_image() -> Image.Image:
    """A 128x128 tile of the stardist nuclei image (the quickstart model's training source)."""
    from hubtools.semiseg.data import nuclei_image

    image = nuclei_image()[0][:128, :128]
    return Image.fromarray((image * 255).astype(np.uint8))


@dataclass
class SegmentationSpace:
    """The loaded model and where this session writes its PNGs."""

    repo_id: str
    model: object
    out_dir: Path

    @classmethod
    def load(cls, repo_id: str) -> SegmentationSpace:
        from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg

        model = UNetForSemiSeg.from_pretrained(repo_id).eval()
        if model.config.spatial_dims != 2:
            raise ValueError(f"{repo_id} is a 3D model; this Space segments 2D images")
        return cls(repo_id, model, Path(tempfile.mkdtemp(prefix="semiseg-space-")))

    @property
    def threshold_learned(self) -> bool:
        return bool(getattr(self.model.config, "threshold_learned", False))

    def segment(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalised image, class per pixel, confidence per pixel) of a grey-scale version of ``image``."""
        from hubtools.semiseg.predict import normalise, segment_with_confidence

        grey = normalise(np.asarray(image.convert("L")))
        mask, confidence = segment_with_confidence(self.model, grey)
        return grey, mask, confidence

    def figure(self, image: Image.Image) -> tuple[Path, str]:
        """The image | mask | confidence PNG and a one-line summary."""
        from hubtools.semiseg.predict import plot_confidence

        grey, mask, confidence = self.segment(image)
        path = plot_confidence(
            grey, mask, confidence, self.out_dir / "segmentation.confidence.png", self.threshold_learned
        )
        source = (
            "the learned threshold distribution"
            if self.threshold_learned
            else "the threshold prior (not learned)"
        )
        summary = (
            f"foreground: {100 * float((mask > 0).mean()):.1f} % of pixels; mean confidence under {source}: "
            f"{float(confidence.mean()):.3f}; pixels whose label flips within the threshold's spread "
            f"(confidence < 0.9): {100 * float((confidence < 0.9).mean()):.1f} %"
        )
        return path, summary


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the model ``repo_id`` (default ``$SEMISEG_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    space = SegmentationSpace.load(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))
    example = space.out_dir / "stardist_nuclei_tile.png"
    example_image().save(example)

    def run(image):
        if image is None:
            raise gr.Error("Upload an image first.")
        path, summary = space.figure(image)
        return str(path), summary, str(path)

    with gr.Blocks(title="Semi-supervised segmentation with a threshold confidence map") as demo:
        gr.Markdown(
            f"# Semi-supervised segmentation with a threshold confidence map\n"
            f"Model: `{space.repo_id}`. Upload a grey-scale image and press **Segment**: the mask binarises at "
            "p > 0.5, and the confidence map shows how often the label would survive a threshold drawn from the "
            "model's threshold distribution (1: always, 0.5: a coin flip). **Not for clinical use.**"
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="Image")
                button = gr.Button("Segment", variant="primary")
            with gr.Column():
                figure = gr.Image(type="filepath", label="Image | prediction | confidence")
                summary = gr.Markdown()
                download = gr.File(label="PNG")
        gr.Examples([[str(example)]], inputs=[image], label="Example: stardist nuclei tile (DSB2018)")
        button.click(run, [image], [figure, summary, download])
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
