"""The Spaces without a browser: folder layout and Space metadata, ``hubtools spaces``, each app building with no
network on artifacts published to the test Hub, and each app's computation checked against an independent one."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from huggingface_hub import SpaceCard

from hubtools import spaces
from hubtools.cli import main

SPACES = ("lora-generator", "longtail", "merge", "retizero", "semiseg", "speed")
MODEL_ENVS = {
    "retizero": "RETIZERO_MODEL",
    "longtail": "LONGTAIL_MODEL",
    "lora-generator": "LORA_GENERATOR_MODEL",
    "speed": "SPEED_MODEL",
    "merge": "MERGE_MODEL",
    "semiseg": "SEMISEG_MODEL",
}


def test_every_space_is_a_hub_space_folder():
    assert spaces.space_names() == sorted(SPACES)
    for name in SPACES:
        folder = spaces.spaces_dir() / name
        card = SpaceCard.load(folder / "README.md")
        meta = card.data.to_dict()
        assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py", name
        app = spaces.load_app(name)
        assert app.MODEL_ENV == MODEL_ENVS[name]
        assert app.DEFAULT_MODEL.startswith("quickstart/")  # the quickstart's artifact by default
        assert app.DEFAULT_MODEL in meta["models"], name
        requirements = [
            line.strip()
            for line in (folder / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert any(r.startswith("gradio") for r in requirements) and any(
            r.startswith("hubtools") for r in requirements
        )


def test_spaces_cli_lists_and_refuses_unknown_names(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["spaces", "list"])
    assert out.exit_code == 0, out.output
    assert [line.split()[0] for line in out.output.splitlines()] == sorted(SPACES)
    bad = runner.invoke(main, ["spaces", "run", "nope"])
    assert bad.exit_code != 0 and "unknown Space 'nope'" in bad.output and "retizero" in bad.output
    missing = runner.invoke(main, ["spaces", "run", "speed", "--hub-data", str(tmp_path / "absent")])
    assert missing.exit_code != 0 and "not a folder" in missing.output


def test_model_repo_reads_the_environment(monkeypatch):
    monkeypatch.delenv("SPEED_MODEL", raising=False)
    assert spaces.model_repo("SPEED_MODEL", "quickstart/x") == "quickstart/x"
    monkeypatch.setenv("SPEED_MODEL", "someone/y")
    assert spaces.model_repo("SPEED_MODEL", "quickstart/x") == "someone/y"


@pytest.fixture
def repos(request) -> dict[str, str]:
    """The repo of each Space, published to the test Hub."""
    names = {
        "retizero": "retizero_repo",
        "longtail": "longtail_repo",
        "lora-generator": "lora_generator_repo",
        "speed": "speed_repo",
        "merge": "merge_repo",
        "semiseg": "semiseg_repo",
    }
    return {space: request.getfixturevalue(fixture) for space, fixture in names.items()}


def test_retizero_space_scores_and_retrieval(retizero_repo):
    import torch.nn.functional as F

    app = spaces.load_app("retizero")
    space = app.RetinalSpace.load(retizero_repo)
    image = app.example_image()
    labels = ["normal fundus", "glaucoma", "drusen"]
    scores = space.classify(image, ", ".join(labels), "A fundus photograph of {}")
    # independent: CLIP-style softmax over scaled cosine similarities, straight from the model
    with torch.no_grad():
        pixels = space.processor(images=[image])["pixel_values"]
        img = F.normalize(space.model.get_image_features(pixels).pooler_output, dim=-1)
        txt = F.normalize(
            space.model.get_text_features(
                **space.processor(text=[f"A fundus photograph of {n}" for n in labels])
            ).pooler_output,
            dim=-1,
        )
        expected = (space.model.effective_logit_scale() * img @ txt.T).softmax(-1)[0]
    assert list(scores) == labels
    assert np.allclose(list(scores.values()), expected.numpy(), atol=1e-5)
    found = space.retrieve(image, 3)
    assert len(found) == 3
    assert found[0][1] == f"{app.EXAMPLE_NAME} (similarity 1.000)"  # the query itself is in the gallery
    sims = [float(caption.rsplit(" ", 1)[1].rstrip(")")) for _, caption in found]
    assert sims == sorted(sims, reverse=True)


def test_semiseg_space_mask_and_threshold_confidence(semiseg_repo):
    from scipy.stats import norm

    from hubtools.semiseg.modeling_semiseg_unet import UNetForSemiSeg

    app = spaces.load_app("semiseg")
    space = app.SegmentationSpace.load(semiseg_repo)
    assert space.threshold_learned  # bpl in soft mode: q(T) is trained by the pseudo labels
    image = app.example_image()
    grey, mask, confidence = space.segment(image)
    # independent: the reloaded model's probabilities and q(T), and Phi((p - mu) / sigma) by scipy
    model = UNetForSemiSeg.from_pretrained(spaces.snapshot(semiseg_repo)).eval()
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None, None]
    with torch.no_grad():
        out = model(x)
    p = torch.sigmoid(out.logits)[0, 0].double().numpy()
    mu, sigma = out.threshold_mu[0, 0].item(), float(np.exp(0.5 * out.threshold_logvar[0, 0].item()))
    phi = norm.cdf((p - mu) / sigma)
    assert np.array_equal(mask, (p > 0.5).astype(mask.dtype))
    assert np.allclose(confidence, np.maximum(phi, 1 - phi), atol=1e-5)
    path, summary = space.figure(image)
    assert path.stat().st_size > 5000 and f"{100 * float((mask > 0).mean()):.1f} %" in summary


def test_longtail_space_predictions_and_figures(longtail_repo):
    from hubtools.longtail.trainer import load_model, normalize

    app = spaces.load_app("longtail")
    space = app.LongTailSpace.load(longtail_repo)
    examples = space.example_files()
    assert examples, "the dataset the model was trained on is on the Hub: its test patches are the examples"
    from PIL import Image

    image = Image.open(examples[0])
    top = space.predict(image)
    model, info = load_model(spaces.snapshot(longtail_repo))
    x = torch.from_numpy(np.asarray(image.convert("RGB").resize((info["image_size"],) * 2))).permute(2, 0, 1)
    with torch.no_grad():
        probs = model(normalize(x[None])).softmax(-1)[0]
    best = int(probs.argmax())
    assert next(iter(top)).startswith(info["class_names"][best] + " (")
    assert next(iter(top.values())) == pytest.approx(float(probs[best]), abs=1e-6)
    assert len(top) == 5
    groups = space.groups
    assert (groups[: info["head"]] == 0).all() and (groups[info["medium"] :] == 2).all()
    assert "balanced_acc" in space.summary() and f"{space.test['balanced_acc']:.2f}" in space.summary()
    for fig in (space.distribution_figure(), space.accuracy_figure()):
        assert fig.size[0] > 400 and np.asarray(fig).std() > 10  # a drawn chart, not a blank image


def test_lora_generator_space_writes_the_generated_adapter(lora_generator_repo, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    app = spaces.load_app("lora-generator")
    space = app.LoraGeneratorSpace.load(lora_generator_repo)
    description = "Decide whether a quotation is about computers (first class) or about food (second class)."
    folder, archive, report = space.generate(description, seed=3, steps=10)
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
        z.extractall(tmp_path)
    again = space.pipe(
        condition=description,
        num_models=1,
        generator=torch.Generator().manual_seed(3),
        num_inference_steps=10,
    ).params[0]
    expected = space.pipe.param_spec.unflatten(again)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert saved.keys() == expected.keys()
    for key in saved:
        assert torch.equal(saved[key], expected[key].float()), key
    assert report["generated_floats"] == space.pipe.param_spec.dim
    assert report["nearest_training_task"].split(" ")[0] in space.task_names()
    PeftModel.from_pretrained(space.pipe.text_encoder, str(tmp_path))  # loads as a normal PEFT adapter
    assert report["max_output_change_vs_base"] > 0
    assert "**generated**" in (tmp_path / "README.md").read_text()


def test_speed_space_statistics_match_the_formulas(speed_repo):
    app = spaces.load_app("speed")
    space = app.SpeedSpace.load(speed_repo)
    assert space.defaults() == {"tau": 650, "k": 3.0, "lam": 0.6, "dual": True, "weight_mode": "paper"}
    T, tau, k = space.num_train_timesteps, 600, 4.0
    path, stats = space.explore(tau=tau, k=k, lam=0.8, dual=False, weight_mode="paper")
    # without dual sampling one draw is the whole story: p(t >= tau) = (T - tau) / (k tau + T - tau)
    share = stats["share_t_ge_tau"]
    p = (T - tau) / (k * tau + T - tau)
    assert share["analytic"] == pytest.approx(p, abs=1e-4)
    se = (p * (1 - p) / app.EMPIRICAL_DRAWS) ** 0.5
    assert abs(share[f"empirical_{app.EMPIRICAL_DRAWS}_draws"] - p) < 4 * se + 1e-4
    assert stats["pivot"] == 642  # linear 1e-4..0.02, T=1000
    assert stats["weight_min_max"] == [pytest.approx(0.2, abs=1e-3), pytest.approx(0.8, abs=1e-3)]
    assert stats["weight_argmax_t"] in (218, 219)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from hubtools.diffusion.speed import SamplerError

    with pytest.raises(SamplerError):
        space.explore(tau=tau, k=k, lam=0.3, dual=True, weight_mode="paper")  # lambda must be in [0.5, 1]


def test_merge_explorer_reclusters_and_reads_uploads(merge_repo, tmp_path):
    from hubtools.merging.cluster import leader_clusters

    app = spaces.load_app("merge")
    view = app.GlueView.from_repo(merge_repo)
    stored = view.report["clustering"]["families"]
    assert view.families() == stored
    assert view.families(view.threshold) == stored  # the same leader clustering on the stored matrix
    assert view.families(-1.0) == [g["members"] for g in view.report["clustering"]["arch_groups"]]  # all join
    assert view.families(1.0) == [[n] for n in view.names]  # nothing is strictly above 1: all alone
    assert len(view.report["clustering"]["arch_groups"]) == 1  # one architecture: one leader clustering
    assert view.families(0.5) == leader_clusters(view.names, view.matrix, 0.5)
    merged = [f"family_{i}" for i, fam in enumerate(stored) if len(fam) > 1]
    assert [n for n in view.recipes if n.startswith("family_")] == merged  # one recipe per merged family
    for name in merged:
        assert view.recipes[name].startswith("merge_method: linear")
    if len(merged) == 1:  # no mixture and one merge: that recipe is also the output's own mergekit_config.yml
        assert view.recipes["final (mergekit_config.yml)"] == view.recipes[merged[0]]
    rows = {r[0]: r for r in view.score_rows()}
    assert rows["final"][3] == pytest.approx(view.report["final"]["report_fitness"], abs=1e-4)
    assert len(rows) == len(view.names) + len(merged) + 1  # every model, each merged family, the final model
    report = tmp_path / "glue_report.json"
    report.write_text(json.dumps(view.report))
    uploaded = app.GlueView.from_report_file(report)
    assert uploaded.families() == stored and list(uploaded.recipes) == merged
    bad = tmp_path / "bad.json"
    bad.write_text('{"zoo": "x"}')
    with pytest.raises(ValueError, match="not a Model-GLUE glue_report.json"):
        app.GlueView.from_report_file(bad)


# Last in the file: the artifacts are then already published by the tests above (spreads the set-up time).
def test_each_app_builds_without_a_network(repos, no_outbound, monkeypatch):
    gr = spaces.gradio()
    for name, repo in repos.items():
        monkeypatch.setenv(spaces.load_app(name).MODEL_ENV, repo)  # the env variable selects the model
        demo = spaces.load_app(name).build_demo()
        assert isinstance(demo, gr.Blocks), name
        assert repo in json.dumps(demo.config, default=str), name  # the page names the repo it loaded
