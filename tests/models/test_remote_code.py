"""The saved/pushed repo loads with AutoModel + trust_remote_code=True in a Python that cannot import hubtools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from bedinov2_testutils import retina_crops, tiny_dinov2
from remote_code_utils import HIDE_HUBTOOLS
from safetensors import safe_open
from transformers import AutoModel

from hubtools.hub.publish import push_artifact
from hubtools.models.be_dinov2 import expand_blocks

# Runs in the child, after HIDE_HUBTOOLS.
_CHILD = HIDE_HUBTOOLS + textwrap.dedent(
    """
    import torch
    from transformers import AutoModel
    x = torch.load({inputs!r}, weights_only=True)
    results = {{}}
    for source in {sources!r}:
        model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
        assert type(model).__name__ == "BeDinov2Model", type(model)
        assert "hubtools" not in type(model).__module__ and "hubtools" not in sys.modules
        with torch.no_grad():
            out = model(x)
        results[source] = {{"h": out.last_hidden_state, "p": out.pooler_output,
                            "indices": torch.tensor(model.config.expanded_layer_indices)}}
    torch.save(results, {result!r})
    """
)
REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _load_without_hubtools(sources: list[str], x: torch.Tensor, tmp_path: Path) -> dict[str, dict]:
    """Outputs of ``AutoModel.from_pretrained(source, trust_remote_code=True)`` on ``x``, per source."""
    torch.save(x, tmp_path / "x.pt")
    script = _CHILD.format(
        repo=REPO_ROOT, inputs=str(tmp_path / "x.pt"), sources=sources, result=str(tmp_path / "result.pt")
    )
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "result.pt", weights_only=True)


def test_folder_and_hub_round_trip_without_hubtools(tmp_path: Path, hub, repo_id: str) -> None:
    base = tiny_dinov2(num_hidden_layers=4)
    expanded = expand_blocks(base, (1, 3), init="layerscale_zero")
    # Train-like perturbation of the new blocks so that the round trip is not checked on identities only.
    with torch.no_grad():
        expanded.encoder.layer[2].layer_scale1.lambda1.fill_(0.05)
    folder = tmp_path / "be"
    expanded.save_pretrained(folder)
    (folder / "README.md").write_text("---\nlibrary_name: transformers\ntags: [hubtools]\n---\n# test\n")
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_be_dinov2.BeDinov2Model"
    assert config["model_type"] == "be-dinov2" and config["expanded_layer_indices"] == [2, 5]
    assert {"configuration_be_dinov2.py", "modeling_be_dinov2.py"} <= {p.name for p in folder.iterdir()}
    for name in ("configuration_be_dinov2.py", "modeling_be_dinov2.py"):
        assert "hubtools" not in (folder / name).read_text().replace("`hubtools`", "").split('"""', 2)[-1]
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert "encoder.layer.0.attention.attention.query.weight" in set(f.keys())  # legacy names on disk

    x = retina_crops(2, 56)
    with torch.no_grad():
        ref = expanded.eval()(x)
    push_artifact(folder, repo_id)
    loaded = _load_without_hubtools([str(folder), repo_id], x, tmp_path)
    for out in loaded.values():
        assert torch.equal(out["h"], ref.last_hidden_state) and torch.equal(out["p"], ref.pooler_output)
        assert out["indices"].tolist() == [2, 5]
    # In-process (hubtools registered) the Auto classes resolve to the same outputs.
    again = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(again(x).last_hidden_state, ref.last_hidden_state)
