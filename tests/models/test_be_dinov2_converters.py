"""Checkpoint interop: dinov2 training checkpoints, RETFound (timm MAE ViT and its DINOv2 variant), DINOv2 with
registers, and BE-DINOv2 as an AutoBackbone.

Checkpoints are built from random tensors in the ORIGINAL key layouts (fused ``attn.qkv``, ``ls1.gamma``,
``teacher.backbone.*``, ``decoder_*``, ``register_tokens`` / timm ``reg_token``), converted, loaded with the
project's classes, and compared with a reference forward written here in plain torch from the original keys.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from remote_code_utils import HIDE_HUBTOOLS
from transformers import Dinov2Config, Dinov2Model

from hubtools.cli import main
from hubtools.errors import ArtifactError
from hubtools.hub.publish import push_artifact
from hubtools.models.be_dinov2 import BeDinov2Config, BeDinov2Model
from hubtools.models.be_dinov2.artifact import save_backbone
from hubtools.models.be_dinov2.convert import convert_checkpoint, convert_state_dict, detect_source
from hubtools.models.be_dinov2.modeling_be_dinov2 import BeDinov2Backbone

HIDDEN, LAYERS, HEADS, PATCH, IMAGE = 32, 2, 2, 4, 16
GRID = IMAGE // PATCH
TOL = 1e-4
REPO_ROOT = str(Path(__file__).resolve().parents[2])


def _vit_state(
    seed: int, *, layerscale: bool, registers: int = 0, mask_token: bool = True
) -> dict[str, torch.Tensor]:
    """A random ViT in the facebookresearch/dinov2 + timm key layout (non-trivial norms, biases, LayerScale)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    d, f = HIDDEN, 4 * HIDDEN
    sd = {
        "cls_token": rnd(1, 1, d, scale=1.0),
        "pos_embed": rnd(1, 1 + GRID * GRID, d, scale=0.5),
        "patch_embed.proj.weight": rnd(d, 3, PATCH, PATCH),
        "patch_embed.proj.bias": rnd(d),
        "norm.weight": 1 + rnd(d, scale=0.1),
        "norm.bias": rnd(d, scale=0.1),
    }
    if mask_token:
        sd["mask_token"] = rnd(1, d)
    if registers:
        sd["register_tokens"] = rnd(1, registers, d, scale=1.0)
    for i in range(LAYERS):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": 1 + rnd(d, scale=0.1),
            p + "norm1.bias": rnd(d, scale=0.1),
            p + "attn.qkv.weight": rnd(3 * d, d),
            p + "attn.qkv.bias": rnd(3 * d),
            p + "attn.proj.weight": rnd(d, d),
            p + "attn.proj.bias": rnd(d),
            p + "norm2.weight": 1 + rnd(d, scale=0.1),
            p + "norm2.bias": rnd(d, scale=0.1),
            p + "mlp.fc1.weight": rnd(f, d),
            p + "mlp.fc1.bias": rnd(f),
            p + "mlp.fc2.weight": rnd(d, f),
            p + "mlp.fc2.bias": rnd(d),
        }
        if layerscale:
            sd[p + "ls1.gamma"] = 0.5 + rnd(d)
            sd[p + "ls2.gamma"] = 0.5 + rnd(d)
    return sd


def _reference(
    sd: dict[str, torch.Tensor], x: torch.Tensor, final_norm: str = "norm"
) -> dict[str, torch.Tensor]:
    """facebookresearch/dinov2 / timm forward from the original keys: patchify, [CLS] + pos, registers after
    CLS, pre-norm blocks with fused-qkv attention and LayerScale where present, final norm."""
    b, d = x.shape[0], HIDDEN
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    tokens = tokens.flatten(2).transpose(1, 2)
    pos = sd["pos_embed"]
    cls = sd["cls_token"].expand(b, -1, -1)
    if pos.shape[1] == GRID * GRID:  # timm no_embed_class: CLS position already inside cls_token
        tokens = torch.cat([cls, tokens + pos], dim=1)
    else:
        tokens = torch.cat([cls, tokens], dim=1) + pos
    registers = sd.get("register_tokens", sd.get("reg_token"))
    n_reg = 0 if registers is None else registers.shape[1]
    if n_reg:
        tokens = torch.cat([tokens[:, :1], registers.expand(b, -1, -1), tokens[:, 1:]], dim=1)
    t = tokens.shape[1]
    hd = d // HEADS
    for i in range(LAYERS):
        p = f"blocks.{i}."
        h = F.layer_norm(tokens, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, t, 3, HEADS, hd).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * hd**-0.5, dim=-1)
        a = F.linear(
            (attn @ v).transpose(1, 2).reshape(b, t, d), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]
        )
        tokens = tokens + (sd[p + "ls1.gamma"] * a if p + "ls1.gamma" in sd else a)
        h = F.layer_norm(tokens, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        m = F.linear(
            F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"]
        )
        m = m + sd[p + "mlp.fc2.bias"]
        tokens = tokens + (sd[p + "ls2.gamma"] * m if p + "ls2.gamma" in sd else m)
    normed = F.layer_norm(tokens, (d,), sd[f"{final_norm}.weight"], sd[f"{final_norm}.bias"], eps=1e-6)
    pooled = F.layer_norm(
        tokens[:, 1 + n_reg :].mean(1), (d,), sd[f"{final_norm}.weight"], sd[f"{final_norm}.bias"], eps=1e-6
    )
    return {
        "cls": normed[:, 0],
        "registers": normed[:, 1 : 1 + n_reg],
        "patches": normed[:, 1 + n_reg :],
        "pooled": pooled,  # RETFound's global-pool feature (fc_norm of the mean patch token)
    }


def _features(model: BeDinov2Model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model.eval()(x, output_hidden_states=True)
    return {
        "cls": out.last_hidden_state[:, 0],
        "patches": out.last_hidden_state[:, 1:],
        "registers": out.register_tokens,
        "pooled": model.layernorm(out.hidden_states[-1][:, 1:].mean(1)),
        "hidden_states": out.hidden_states,
    }


def _max_diff(got: dict, ref: dict, keys=("cls", "patches")) -> float:
    diff = max((got[k] - ref[k]).abs().max().item() for k in keys)
    print(f"max |feature - reference| over {keys}: {diff:.3g}")
    return diff


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(7))


def _heads(branch: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    names = {
        "dino_head.mlp.0.weight": (16, HIDDEN),
        "dino_head.mlp.0.bias": (16,),
        "dino_head.mlp.2.weight": (8, 16),
        "dino_head.mlp.2.bias": (8,),
        "dino_head.last_layer.weight_g": (64, 1),
        "dino_head.last_layer.weight_v": (64, 8),
        "ibot_head.mlp.0.weight": (16, HIDDEN),
        "ibot_head.last_layer.weight_v": (64, 8),
    }
    return {f"{branch}.{k}": torch.randn(*s, generator=g) for k, s in names.items()}


def test_retfound_mae_checkpoint_cli_and_licence(tmp_path: Path, images: torch.Tensor) -> None:
    """RETFound's MAE file: {"model": encoder + decoder, "args": Namespace, ...}; decoder and its mask token dropped,
    LayerScale fixed at 1, CC BY-NC 4.0 in config and card."""
    encoder = _vit_state(1, layerscale=False, mask_token=False)
    decoder = {
        "mask_token": torch.randn(1, 1, 24),
        "decoder_embed.weight": torch.randn(24, HIDDEN),
        "decoder_embed.bias": torch.randn(24),
        "decoder_pos_embed": torch.randn(1, 1 + GRID * GRID, 24),
        "decoder_blocks.0.norm1.weight": torch.randn(24),
        "decoder_blocks.0.attn.qkv.weight": torch.randn(72, 24),
        "decoder_norm.weight": torch.randn(24),
        "decoder_pred.weight": torch.randn(PATCH * PATCH * 3, 24),
    }
    pth = tmp_path / "checkpoint-799.pth"  # MAE pretraining output: the decoder keys identify it
    torch.save(
        {"model": encoder | decoder, "epoch": 3, "args": argparse.Namespace(model="mae_vit_large")}, pth
    )

    out = tmp_path / "retfound"
    result = CliRunner().invoke(
        main,
        ["be-dinov2", "convert", "--pth", str(pth), "--out", str(out), "--num-heads", str(HEADS)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "source retfound-mae (detected)" in result.output and "decoder_* (7 tensors)" in result.output
    assert "mask_token (MAE decoder) (1 tensors)" in result.output

    model = BeDinov2Model.from_pretrained(out)
    assert model.config.weights_license == "cc-by-nc-4.0" and model.config.image_size == IMAGE
    for layer in model.encoder.layer:
        assert torch.equal(layer.layer_scale1.lambda1, torch.ones(HIDDEN))
        assert torch.equal(layer.layer_scale2.lambda1, torch.ones(HIDDEN))
    assert torch.equal(model.embeddings.mask_token, torch.zeros(1, HIDDEN))  # not the decoder's token
    got, ref = _features(model, images), _reference(encoder, images)
    assert _max_diff(got, ref) <= TOL

    card = (out / "README.md").read_text()
    header = card.split("---")[1]
    assert "license: cc-by-nc-4.0" in header and "non-commercial" in card
    assert json.loads((out / "config.json").read_text())["weights_license"] == "cc-by-nc-4.0"


def test_retfound_global_pool_finetune_needs_explicit_source(tmp_path: Path, images: torch.Tensor) -> None:
    """A fine-tuned RETFound (fc_norm instead of norm, classifier head, no decoder) has no telling keys."""
    sd = _vit_state(2, layerscale=False, mask_token=False)
    sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    sd["head.weight"], sd["head.bias"] = torch.randn(5, HIDDEN), torch.randn(5)
    pth = tmp_path / "checkpoint-best.pth"
    torch.save({"model": sd, "epoch": 9}, pth)
    with pytest.raises(ArtifactError, match="retfound-mae") as err:
        convert_checkpoint(pth, num_attention_heads=HEADS)
    assert "blocks" in str(err.value) and "fc_norm" in str(err.value) and "head" in str(err.value)

    model, info = convert_checkpoint(pth, num_attention_heads=HEADS, source="retfound-mae")
    assert info.dropped == {"head.*": 2} and info.license == "cc-by-nc-4.0" and not info.detected
    assert any("fc_norm" in note for note in info.notes)
    got, ref = _features(model, images), _reference(sd, images, final_norm="fc_norm")
    assert _max_diff(got, ref, ("cls", "patches", "pooled")) <= TOL


def test_dinov2_training_checkpoint_teacher_and_student(tmp_path: Path, images: torch.Tensor) -> None:
    teacher, student = _vit_state(3, layerscale=True), _vit_state(4, layerscale=True)
    full = (
        {f"teacher.backbone.{k}": v for k, v in teacher.items()}
        | {f"student.backbone.{k}": v for k, v in student.items()}
        | _heads("teacher", 5)
        | _heads("student", 6)
        | {"dino_loss.center": torch.zeros(1, 64), "ibot_patch_loss.center": torch.zeros(1, 1, 64)}
    )
    pth = tmp_path / "model_0012499.rank_0.pth"
    torch.save({"model": full, "optimizer": {"state": {}, "param_groups": []}, "iteration": 12499}, pth)

    model, info = convert_checkpoint(pth, num_attention_heads=HEADS)
    n_student = sum(k.startswith("student.") for k in full)
    assert info.source == "dinov2-train" and info.detected and info.branch == "teacher"
    assert info.dropped == {
        "teacher.dino_head.*": 6,
        "teacher.ibot_head.*": 2,
        "student.*": n_student,
        "dino_loss.*": 1,
        "ibot_patch_loss.*": 1,
    }
    assert "teacher.dino_head.* (6 tensors)" in info.summary() and info.license == "apache-2.0"
    assert _max_diff(_features(model, images), _reference(teacher, images)) <= TOL

    student_model, student_info = convert_checkpoint(pth, num_attention_heads=HEADS, use_student=True)
    assert student_info.branch == "student" and "teacher.*" in student_info.dropped
    assert _max_diff(_features(student_model, images), _reference(student, images)) <= TOL
    # the two branches really differ, so the comparison above tells them apart
    assert (_features(student_model, images)["cls"] - _reference(teacher, images)["cls"]).abs().max() > 0.1

    # dinov2's eval/teacher_checkpoint.pth: {"teacher": {backbone.*, dino_head.*}}
    pth2 = tmp_path / "teacher_checkpoint.pth"
    teacher_only = {f"backbone.{k}": v for k, v in teacher.items()}
    teacher_only |= {k.removeprefix("teacher."): v for k, v in _heads("teacher", 5).items()}
    torch.save({"teacher": teacher_only}, pth2)
    model2, info2 = convert_checkpoint(pth2, num_attention_heads=HEADS)
    assert info2.dropped == {"teacher.dino_head.*": 6, "teacher.ibot_head.*": 2}
    assert torch.equal(_features(model2, images)["cls"], _features(model, images)["cls"])


def test_registers_hub_and_timm_layouts(tmp_path: Path, images: torch.Tensor) -> None:
    sd = _vit_state(8, layerscale=True, registers=4)
    pth = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(sd, pth)
    model, info = convert_checkpoint(pth, num_attention_heads=HEADS)
    assert info.source == "dinov2" and model.config.num_register_tokens == 4
    save_backbone(model, tmp_path / "reg")
    loaded = BeDinov2Model.from_pretrained(tmp_path / "reg")
    got, ref = _features(loaded, images), _reference(sd, images)
    assert got["patches"].shape == (2, GRID * GRID, HIDDEN) and got["registers"].shape == (2, 4, HIDDEN)
    assert all(h.shape == (2, 1 + GRID * GRID, HIDDEN) for h in got["hidden_states"])
    assert _max_diff(got, ref, ("cls", "patches", "registers")) <= TOL

    # timm's export of the same network: reg_token, CLS position folded into cls_token, no mask token
    timm_sd = {
        k: v for k, v in sd.items() if k not in ("register_tokens", "mask_token", "pos_embed", "cls_token")
    }
    timm_sd |= {
        "reg_token": sd["register_tokens"],
        "cls_token": sd["cls_token"] + sd["pos_embed"][:, :1],
        "pos_embed": sd["pos_embed"][:, 1:],
    }
    hf_state, config, timm_info = convert_state_dict(timm_sd, "retfound-dinov2", num_attention_heads=HEADS)
    assert timm_info.license == "cc-by-nc-4.0" and any("no_embed_class" in n for n in timm_info.notes)
    timm_model = BeDinov2Model(BeDinov2Config(**config))
    timm_model.load_state_dict(hf_state, strict=True)
    assert _max_diff(_features(timm_model, images), ref, ("cls", "patches", "registers")) <= TOL


def test_register_free_outputs_equal_native_dinov2(images: torch.Tensor) -> None:
    """The register/backbone additions leave a register-free BeDinov2Model computing Dinov2Model's outputs."""
    kwargs = dict(
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        patch_size=PATCH,
        image_size=IMAGE,
        layerscale_value=0.3,
    )
    native = Dinov2Model(Dinov2Config(**kwargs)).eval()
    with torch.no_grad():
        for name, param in native.named_parameters():
            if name.endswith(("bias", "mask_token")):
                param.normal_(0.0, 0.1)
    ours = BeDinov2Model(BeDinov2Config(**kwargs)).eval()
    assert list(ours.state_dict()) == list(native.state_dict())
    ours.load_state_dict(native.state_dict(), strict=True)
    with torch.no_grad():
        a, b = native(images, output_hidden_states=True), ours(images, output_hidden_states=True)
        a_tuple, b_tuple = native(images, return_dict=False), ours(images, return_dict=False)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state) and torch.equal(
        a.pooler_output, b.pooler_output
    )
    assert all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states, strict=True))
    assert b.register_tokens is None and len(a_tuple) == len(b_tuple)


def _registers_folder(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _vit_state(9, layerscale=True, registers=2)
    pth = tmp_path / "reg2.pth"
    torch.save(sd, pth)
    model, _ = convert_checkpoint(pth, num_attention_heads=HEADS)
    save_backbone(model, tmp_path / "reg2")
    return tmp_path / "reg2", sd


def test_backbone_feature_maps_are_reshaped_hidden_states(tmp_path: Path, images: torch.Tensor) -> None:
    folder, sd = _registers_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoBackbone"] == "modeling_be_dinov2.BeDinov2Backbone"
    backbone = BeDinov2Backbone.from_pretrained(folder, out_indices=[1, 2]).eval()
    model = BeDinov2Model.from_pretrained(folder).eval()
    assert backbone.out_features == ["stage1", "stage2"]
    with torch.no_grad():
        maps = backbone(images).feature_maps
        hidden = model(images, output_hidden_states=True).hidden_states
    assert [tuple(m.shape) for m in maps] == [(2, HIDDEN, GRID, GRID)] * 2
    for feature_map, index in zip(maps, (1, 2), strict=True):
        expected = model.layernorm(hidden[index])[:, 1:]  # CLS (and registers) are not in the map
        expected = expected.reshape(2, GRID, GRID, HIDDEN).permute(0, 3, 1, 2)
        assert torch.equal(feature_map, expected)
    # the last map is the reference's final patch grid: row r, column c is patch r * GRID + c
    ref = _reference(sd, images)["patches"]
    assert (maps[-1][:, :, 1, 2] - ref[:, 1 * GRID + 2]).abs().max() <= TOL


# transformers 5.25's AutoBackbone.from_pretrained first asks the Hub whether the name is a repo (else it tries
# timm), so a local folder path fails validation for every model, native Dinov2 included: the child loads the
# pushed repo through AutoBackbone, and the folder through the class its auto_map names.
_CHILD = HIDE_HUBTOOLS + textwrap.dedent(
    """
    import torch
    from transformers import AutoBackbone, AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    x = torch.load({inputs!r}, weights_only=True)
    from_hub = AutoBackbone.from_pretrained({repo_id!r}, trust_remote_code=True, out_indices=[1, 2]).eval()
    config = AutoConfig.from_pretrained({folder!r}, trust_remote_code=True, out_indices=[1, 2])
    backbone_class = get_class_from_dynamic_module(config.auto_map["AutoBackbone"], {folder!r})
    from_folder = backbone_class.from_pretrained({folder!r}, config=config).eval()
    results = []
    for backbone in (from_hub, from_folder):
        assert type(backbone).__name__ == "BeDinov2Backbone", type(backbone)
        assert "hubtools" not in type(backbone).__module__
        with torch.no_grad():
            results.append(list(backbone(x).feature_maps))
    assert "hubtools" not in sys.modules
    torch.save(results, {result!r})
    """
)


def test_auto_backbone_remote_code_without_hubtools(
    tmp_path: Path, images: torch.Tensor, hub, repo_id: str
) -> None:
    folder, _ = _registers_folder(tmp_path)
    push_artifact(folder, repo_id)
    torch.save(images, tmp_path / "x.pt")
    script = _CHILD.format(
        repo=REPO_ROOT,
        repo_id=repo_id,
        folder=str(folder),
        inputs=str(tmp_path / "x.pt"),
        result=str(tmp_path / "maps.pt"),
    )
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = torch.load(tmp_path / "maps.pt", weights_only=True)
    local = BeDinov2Backbone.from_pretrained(folder, out_indices=[1, 2]).eval()
    with torch.no_grad():
        expected = local(images).feature_maps
    for maps in remote:
        assert len(maps) == 2 and all(torch.equal(r, e) for r, e in zip(maps, expected, strict=True))


def test_unknown_and_mismatched_layouts_raise(tmp_path: Path) -> None:
    weird = {
        "encoder.layers.0.w": torch.zeros(2),
        "encoder.layers.1.w": torch.zeros(2),
        "foo.bar": torch.zeros(1),
    }
    with pytest.raises(ArtifactError, match=r"encoder\.layers \(2\).*foo\.bar \(1\)"):
        detect_source(weird)
    pth = tmp_path / "weird.pth"
    torch.save(weird, pth)
    result = CliRunner().invoke(
        main, ["be-dinov2", "convert", "--pth", str(pth), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "encoder.layers (2)" in result.output and not (tmp_path / "x").exists()

    dinov2 = _vit_state(10, layerscale=True)
    with pytest.raises(ArtifactError, match=r"blocks\.0\.attn\.q_norm\.weight"):
        convert_state_dict(
            dinov2 | {"blocks.0.attn.q_norm.weight": torch.ones(HIDDEN)}, num_attention_heads=HEADS
        )
    with pytest.raises(ArtifactError, match="not an MAE ViT"):
        convert_state_dict(dinov2, "retfound-mae", num_attention_heads=HEADS)
    with pytest.raises(ArtifactError, match="retfound-mae"):
        convert_state_dict(_vit_state(11, layerscale=False), "dinov2", num_attention_heads=HEADS)
    training = {f"teacher.backbone.{k}": v for k, v in dinov2.items()}
    with pytest.raises(ArtifactError, match="dinov2-train"):
        convert_state_dict(training, "dinov2", num_attention_heads=HEADS)
    with pytest.raises(ArtifactError, match="no student backbone"):
        convert_state_dict(training, use_student=True, num_attention_heads=HEADS)
    with pytest.raises(ArtifactError, match="use_student"):
        convert_state_dict(dinov2, use_student=True, num_attention_heads=HEADS)
    with pytest.raises(ArtifactError, match=r"inside the teacher branch: projector\.weight \(1\)"):
        convert_state_dict(training | {"teacher.projector.weight": torch.zeros(2)}, num_attention_heads=HEADS)


def test_official_dinov2_weights_keep_apache_licence(tmp_path: Path) -> None:
    pth = tmp_path / "dinoret.pth"
    torch.save(_vit_state(12, layerscale=True), pth)
    model, info = convert_checkpoint(pth, num_attention_heads=HEADS)
    assert info.license == "apache-2.0" and info.dropped == {}
    save_backbone(model, tmp_path / "out")
    assert "license: apache-2.0" in (tmp_path / "out" / "README.md").read_text().split("---")[1]
    # the name decides between Meta's and RETFound's DINOv2-recipe weights (the keys cannot)
    (tmp_path / "RETFound_dinov2_meh.pth").write_bytes(pth.read_bytes())
    _, retfound = convert_checkpoint(tmp_path / "RETFound_dinov2_meh.pth", num_attention_heads=HEADS)
    assert retfound.source == "retfound-dinov2" and retfound.license == "cc-by-nc-4.0"


def test_expansion_keeps_registers_and_the_source_licence(tmp_path: Path, images: torch.Tensor) -> None:
    """Expanding a converted RETFound-with-registers folder: registers and CC BY-NC survive, output unchanged."""
    from hubtools.models.be_dinov2 import expand_blocks

    sd = _vit_state(11, layerscale=True, registers=2)
    pth = tmp_path / "retfound_dinov2_reg.pth"  # "retfound" in the name: RETFound's DINOv2-recipe weights
    torch.save(sd, pth)
    model, info = convert_checkpoint(pth, num_attention_heads=HEADS)
    assert model.config.weights_license == "cc-by-nc-4.0"
    save_backbone(model, tmp_path / "conv")
    expanded = expand_blocks(tmp_path / "conv", positions=[0])
    assert expanded.config.num_register_tokens == 2 and expanded.config.weights_license == "cc-by-nc-4.0"
    assert expanded.config.num_hidden_layers == model.config.num_hidden_layers + 1
    # the inserted block is an identity at init: features equal the converted model's
    assert (
        _max_diff(_features(expanded.eval(), images), _features(model.eval(), images), ("cls", "patches"))
        <= TOL
    )
