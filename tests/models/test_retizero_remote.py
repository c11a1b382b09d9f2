"""A saved/pushed RetiZero repo loads with AutoModel + trust_remote_code=True in a Python without hubtools, and
drives transformers' zero-shot-image-classification pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from remote_code_utils import HIDE_HUBTOOLS
from test_retizero_utils import perturb_lora, retina_images, tiny_processor, tiny_retizero

from hubtools.hub.publish import push_artifact

LABELS = ["glaucoma", "macular hole", "normal"]
# Runs in the child, after HIDE_HUBTOOLS.
_CHILD = HIDE_HUBTOOLS + textwrap.dedent(
    """
    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor, pipeline
    batch = torch.load({inputs!r}, weights_only=True)
    results = {{}}
    for source in {sources!r}:
        model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
        assert type(model).__name__ == "RetiZeroModel", type(model)
        assert "hubtools" not in type(model).__module__ and "hubtools" not in sys.modules
        processor = AutoProcessor.from_pretrained(source)
        enc = processor(images=[Image.open({image!r})], text={labels!r}, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**batch)
        classify = pipeline("zero-shot-image-classification", model=source, trust_remote_code=True)
        scores = classify(Image.open({image!r}), candidate_labels={labels!r},
                          hypothesis_template="A fundus photograph of {{}}")
        results[source] = {{"image": out.image_embeds, "text": out.text_embeds, "pixels": enc["pixel_values"],
                            "vision_class": type(model.vision_model).__name__,
                            "labels": [s["label"] for s in scores],
                            "total": torch.tensor(sum(s["score"] for s in scores))}}
    torch.save(results, {result!r})
    """
)
REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _tiny_be_dinov2_retizero():
    """A RetiZero whose vision tower is a block-expanded DINOv2 (hubtools' be-dinov2 family, remote code)."""
    from transformers import AutoModel, Dinov2Config, Dinov2Model

    from hubtools.data.offline import minilm_path
    from hubtools.models.be_dinov2 import expand_blocks
    from hubtools.models.retizero import RetiZeroModel

    torch.manual_seed(0)
    base = Dinov2Model(
        Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8, image_size=32)
    )
    vision = expand_blocks(base, positions=[1])
    model = RetiZeroModel.from_towers(
        vision, AutoModel.from_pretrained(minilm_path()), vision_lora={"r": 2}, projection_dim=16
    )
    with torch.no_grad():  # the inserted block starts as an identity: give it weights a lost copy would show
        for param in model.vision_model.encoder.layer[2].parameters():
            param.normal_(0.0, 0.05)
    return model.eval()


@pytest.mark.timeout(360)  # the child process gets 300 s
@pytest.mark.parametrize("tower", ["vit", "be-dinov2"])
def test_folder_and_hub_round_trip_without_hubtools(tower: str, tmp_path: Path, hub, repo_id: str) -> None:
    model = tiny_retizero() if tower == "vit" else _tiny_be_dinov2_retizero()
    processor = tiny_processor()
    perturb_lora(model)
    folder = tmp_path / "rz"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "README.md").write_text(
        "---\nlibrary_name: transformers\ntags: [hubtools, fundus]\n---\n# test\n"
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_retizero.RetiZeroModel"
    assert config["auto_map"]["AutoModelForZeroShotImageClassification"] == "modeling_retizero.RetiZeroModel"
    shipped = {p.name for p in folder.glob("*.py")}
    expected = {"configuration_retizero.py", "modeling_retizero.py"}
    if tower == "be-dinov2":
        expected |= {"configuration_be_dinov2.py", "modeling_be_dinov2.py"}
        assert "AutoConfig.register('be-dinov2'" in (folder / "configuration_retizero.py").read_text()
    assert shipped == expected
    for name in shipped:
        imports = [line for line in (folder / name).read_text().splitlines() if "import " in line]
        assert imports and not any("hubtools" in line for line in imports), imports

    image_path = tmp_path / "retina.png"
    retina_images(1, seed=3)[0].save(image_path)
    batch = dict(processor(images=retina_images(2), text=LABELS[:2]))
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        ref = model(**batch)
    push_artifact(folder, repo_id)

    script = _CHILD.format(
        repo=REPO_ROOT,
        inputs=str(tmp_path / "batch.pt"),
        sources=[str(folder), repo_id],
        image=str(image_path),
        labels=LABELS,
        result=str(tmp_path / "result.pt"),
    )
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "result.pt", weights_only=True)
    expected_pixels = processor(images=[retina_images(1, seed=3)[0]])["pixel_values"]
    for out in results.values():
        assert out["vision_class"] == type(model.vision_model).__name__  # BeDinov2Model, rebuilt remotely
        assert torch.equal(out["image"], ref.image_embeds) and torch.equal(out["text"], ref.text_embeds)
        torch.testing.assert_close(out["pixels"], expected_pixels)
        assert sorted(out["labels"]) == sorted(LABELS)
        assert abs(out["total"].item() - 1.0) < 1e-5
