"""Saved p-diff / COND P-DIFF pipelines carry their own code: plain diffusers loads them with
``trust_remote_code=True`` in a process where hubtools cannot be imported (from a folder and from
the local Hub), and generates exactly what hubtools' own classes generate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from transformers import BertConfig, BertModel, BertTokenizer

import hubtools.paramgen.models as paramgen_models
from hubtools.errors import ArtifactError
from hubtools.hub.publish import push_artifact
from hubtools.paramgen import (
    ConditionEncoder,
    CondParamDenoiser,
    CondPDiffPipeline,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
    ParamSpec,
    PDiffPipeline,
)
from hubtools.paramgen.publish import save_pipeline
from hubtools.paramgen.training import PDiffTrainConfig, make_scheduler

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(paramgen_models.__file__).parent
SHIPPED = ("pipelines.py", "models.py", "spec.py")
OWN_CLASSES = {
    "ParamAutoencoder",
    "ParamDenoiser",
    "CondParamDenoiser",
    "ConditionEncoder",
    "ParamNormalizer",
}
SPEC = ParamSpec([("fc.weight", (4, 6)), ("fc.bias", (4,))])
STEPS = 8
DESCRIPTION = "Decide whether a quote is about food or computers."
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "decide", "whether", "a", "quote", "is", "about"]
WORDS += ["food", "or", "computers", "."]

# Run in a fresh interpreter: hubtools is refused by a meta-path finder placed before every other
# finder (the editable install's included), and the repository is on neither sys.path nor the cwd.
CHILD = r"""
import json, sys
from pathlib import Path


class HideHubtools:
    def find_spec(self, name, path=None, target=None):
        if name == "hubtools" or name.startswith("hubtools."):
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return None


sys.meta_path.insert(0, HideHubtools())
repo = Path(sys.argv[1]).resolve()
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != repo]

import torch
from diffusers import DiffusionPipeline

torch.set_num_threads(1)
report = {"jobs": []}
for job in json.loads(Path(sys.argv[2]).read_text()):
    pipe = DiffusionPipeline.from_pretrained(job["source"], trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    params = pipe(num_models=3, generator=gen, num_inference_steps=job["steps"], **job["kwargs"]).params
    torch.save(params, job["out"])
    if job.get("resave"):
        pipe.save_pretrained(job["resave"])
    report["jobs"].append([type(pipe).__module__, type(pipe).__name__, type(pipe.autoencoder).__module__])
try:
    import hubtools  # noqa: F401
    report["import_hubtools"] = "succeeded"
except ImportError:
    report["import_hubtools"] = "refused"
report["hubtools_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "hubtools")
report["repo_on_path"] = any(Path(p or ".").resolve() == repo for p in sys.path)
Path(sys.argv[3]).write_text(json.dumps(report))
"""


@dataclass
class Saved:
    """A pipeline built here, the folder it was saved to, and what hubtools generates with it."""

    pipe: PDiffPipeline | CondPDiffPipeline
    folder: Path
    kwargs: dict
    expected: torch.Tensor


def _autoencoder() -> ParamAutoencoder:
    return ParamAutoencoder(
        in_dim=SPEC.dim, fold_rate=2, kernel_size=3, dec_channels=(4, 8, 8, 4), param_spec=SPEC.to_dict()
    ).eval()


def make_pdiff(normalized: bool) -> PDiffPipeline:
    torch.manual_seed(0)
    ae = _autoencoder()
    denoiser = ParamDenoiser(latent_dim=4 * ae.latent_length, channels=(4, 8, 8, 8)).eval()
    norm = ParamNormalizer(dim=SPEC.dim).fit(torch.randn(6, SPEC.dim) * 5 + 2) if normalized else None
    return PDiffPipeline(
        autoencoder=ae,
        denoiser=denoiser,
        scheduler=make_scheduler(PDiffTrainConfig(output_dir=".")),
        normalizer=norm,
    )


def make_cond(text: bool) -> CondPDiffPipeline:
    torch.manual_seed(0)
    ae = _autoencoder()
    text_encoder = tokenizer = None
    cond_dim = 6
    if text:
        tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
        config = BertConfig(
            vocab_size=len(WORDS),
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=32,
        )
        text_encoder, cond_dim = BertModel(config).eval(), 8
    enc = ConditionEncoder(mode="mlp", cond_dim=cond_dim, embed_dim=5, hidden_dim=8, num_tasks=2)
    enc.task_conditions.normal_()
    norm = ParamNormalizer(dim=SPEC.dim, mode="global", task_names=["a", "b"])
    norm.fit(torch.randn(10, SPEC.dim) * 3)
    den = CondParamDenoiser(latent_dim=4 * ae.latent_length, cond_embed_dim=5, channels=(4, 8, 8, 8))
    return CondPDiffPipeline(
        autoencoder=ae,
        denoiser=den.eval(),
        condition_encoder=enc.eval(),
        normalizer=norm,
        scheduler=make_scheduler(PDiffTrainConfig(output_dir=".")),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )


def generate(pipe, kwargs: dict) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        num_models=3, generator=torch.Generator().manual_seed(0), num_inference_steps=STEPS, **kwargs
    ).params


def run_without_hubtools(jobs: list[dict], work: Path, env_extra: dict | None = None) -> dict:
    """Run CHILD on ``jobs``; return its report (what it imported, which classes it loaded)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"HF_MODULES_CACHE": str(work / "modules"), "OMP_NUM_THREADS": "1", **(env_extra or {})})
    args = [sys.executable, "-c", CHILD, str(REPO_ROOT), str(work / "jobs.json"), str(work / "report.json")]
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # diffusers' warnings for a shipped file importing a missing package, and for a loaded component
    # that fails the pipeline's __init__ annotations: a clean load prints neither.
    for warning in ("might require the following packages", "Expected types for"):
        assert warning not in done.stderr, done.stderr[-3000:]
    return json.loads((work / "report.json").read_text())


def assert_ran_without_hubtools(report: dict, n_jobs: int) -> None:
    assert report["import_hubtools"] == "refused"
    assert report["hubtools_modules"] == []
    assert report["repo_on_path"] is False
    assert len(report["jobs"]) == n_jobs
    for pipeline_module, _, autoencoder_module in report["jobs"]:
        assert pipeline_module.startswith("diffusers_modules.") and pipeline_module.endswith(".pipelines")
        assert autoencoder_module.startswith("diffusers_modules.") and autoencoder_module.endswith(".models")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Saved]:
    """Four tiny pipelines saved to folders (one through the project's publish path, with its card).

    One intra-op thread, as in the child and in every test here (conftest's fixture is per test).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("saved")
    pipes = {
        "pdiff": (make_pdiff(normalized=False), {}),
        "pdiff_norm": (make_pdiff(normalized=True), {}),
        "cond": (make_cond(text=False), {"condition": 1}),
        "cond_text": (make_cond(text=True), {"condition": DESCRIPTION}),
    }
    out = {}
    for name, (pipe, kwargs) in pipes.items():
        folder = root / name
        if name == "pdiff":
            save_pipeline(pipe, folder, host_model="test host", num_checkpoints=4)
        else:
            pipe.save_pretrained(folder)
        out[name] = Saved(pipe, folder, kwargs, generate(pipe, kwargs))
    torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def local_child(saved, tmp_path_factory) -> tuple[dict, Path]:
    """Plain diffusers, hubtools hidden: load every saved folder, generate, and re-save the conditional one."""
    work = tmp_path_factory.mktemp("child")
    jobs = [
        {
            "source": str(s.folder),
            "out": str(work / f"{name}.pt"),
            "kwargs": s.kwargs,
            "steps": STEPS,
            "resave": str(work / "resaved") if name == "cond_text" else None,
        }
        for name, s in saved.items()
    ]
    return run_without_hubtools(jobs, work), work


def test_saved_folder_ships_the_package_sources_and_names_them(saved):
    for name, s in saved.items():
        index = json.loads((s.folder / "model_index.json").read_text())
        assert index["_class_name"] == ["pipelines", type(s.pipe).__name__]
        own = sorted(k for k, v in index.items() if isinstance(v, list) and v[-1] in OWN_CLASSES)
        assert own == sorted(k for k, v in s.pipe.components.items() if type(v).__name__ in OWN_CLASSES)
        for component in own:
            assert index[component][0] == "models"
            assert (s.folder / component / "models.py").read_bytes() == (PACKAGE / "models.py").read_bytes()
        for file in SHIPPED:
            assert (s.folder / file).read_bytes() == (PACKAGE / file).read_bytes(), (name, file)
        assert sorted(p.relative_to(s.folder).as_posix() for p in s.folder.rglob("*.py")) == sorted(
            [*SHIPPED, *(f"{c}/models.py" for c in own)]
        )
        assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert json.loads((saved["pdiff"].folder / "model_index.json").read_text())["normalizer"] == [None, None]
    text_index = json.loads((saved["cond_text"].folder / "model_index.json").read_text())
    assert text_index["text_encoder"] == ["transformers", "BertModel"]
    assert text_index["tokenizer"][0] == "transformers"
    card = (saved["pdiff"].folder / "README.md").read_text()
    assert "DiffusionPipeline.from_pretrained(" in card and "trust_remote_code=True" in card
    assert "PDiffPipeline.from_pretrained(" in card


@pytest.mark.parametrize("name", ["pdiff", "pdiff_norm", "cond", "cond_text"])
def test_plain_diffusers_without_hubtools_generates_the_same_params(saved, local_child, name):
    report, work = local_child
    assert_ran_without_hubtools(report, len(saved))
    assert torch.equal(torch.load(work / f"{name}.pt", weights_only=True), saved[name].expected)


def test_pipeline_loaded_as_remote_code_saves_the_same_layout(saved, local_child):
    _, work = local_child
    original, resaved = saved["cond_text"].folder, work / "resaved"
    assert (resaved / "model_index.json").read_text() == (original / "model_index.json").read_text()
    for file in [*SHIPPED, *(f"{c}/models.py" for c in ("autoencoder", "denoiser", "condition_encoder"))]:
        assert (resaved / file).read_bytes() == (PACKAGE / Path(file).name).read_bytes()
    back = CondPDiffPipeline.from_pretrained(resaved)
    assert torch.equal(generate(back, saved["cond_text"].kwargs), saved["cond_text"].expected)


def _old_layout(folder: Path, dest: Path) -> Path:
    """The layout hubtools wrote before folders carried code: module paths, no .py files."""
    shutil.copytree(folder, dest)
    index = json.loads((dest / "model_index.json").read_text())
    index["_class_name"] = index["_class_name"][1]
    for key, value in index.items():
        if isinstance(value, list) and value[0] == "models":
            index[key] = ["hubtools.paramgen.models", value[1]]
    (dest / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    for path in dest.rglob("*.py"):
        path.unlink()
    return dest


@pytest.mark.parametrize("name", ["pdiff", "pdiff_norm", "cond", "cond_text"])
def test_hubtools_loads_new_and_old_layout_with_its_own_classes(saved, tmp_path, name):
    s = saved[name]
    cls = type(s.pipe)
    old = _old_layout(s.folder, tmp_path / "old")
    for folder in (s.folder, old):
        back = cls.from_pretrained(folder)
        assert type(back) is cls
        assert type(back.autoencoder) is paramgen_models.ParamAutoencoder
        assert type(back.normalizer) is (type(s.pipe.normalizer))
        assert torch.equal(generate(back, s.kwargs), s.expected)
    if name == "cond_text":
        assert type(back.text_encoder) is BertModel


def test_plain_diffusers_asks_for_trust_remote_code(saved):
    with pytest.raises(
        ValueError, match=r"(?s)contains custom code in pipelines\.py.*trust_remote_code=True"
    ):
        DiffusionPipeline.from_pretrained(saved["pdiff"].folder)


def test_hubtools_from_pretrained_checks_class_kwargs_and_takes_components(saved, tmp_path):
    with pytest.raises(ArtifactError, match="holds a CondPDiffPipeline pipeline, not a PDiffPipeline"):
        PDiffPipeline.from_pretrained(saved["cond"].folder)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['torch_dtype'\\]"):
        PDiffPipeline.from_pretrained(saved["pdiff"].folder, torch_dtype=torch.float16)
    with pytest.raises(ArtifactError, match="cannot read the model_index.json"):
        PDiffPipeline.from_pretrained(tmp_path)
    ddim = DDIMScheduler.from_config(saved["pdiff_norm"].pipe.scheduler.config)
    back = PDiffPipeline.from_pretrained(saved["pdiff_norm"].folder, scheduler=ddim, normalizer=None)
    assert back.scheduler is ddim and back.normalizer is None


def test_pushed_repos_load_without_hubtools(saved, hub, repo_id, tmp_path):
    """Three ways to push (push_to_hub, save_pretrained(push_to_hub=True), the publish path); plain
    diffusers loads each by repo id, the first twice (the second load comes from the cache)."""
    repos = {"pdiff_norm": repo_id, "cond": repo_id + "-cond", "pdiff": repo_id + "-published"}
    saved["pdiff_norm"].pipe.push_to_hub(repos["pdiff_norm"])
    saved["cond"].pipe.save_pretrained(tmp_path / "cond", push_to_hub=True, repo_id=repos["cond"])
    push_artifact(saved["pdiff"].folder, repos["pdiff"])
    with pytest.raises(
        ValueError, match=r"(?s)contains custom code in pipelines\.py.*trust_remote_code=True"
    ):
        DiffusionPipeline.from_pretrained(repos["cond"])
    names = ["pdiff_norm", "cond", "pdiff", "pdiff_norm"]
    jobs = [
        {"source": repos[n], "out": str(tmp_path / f"{i}.pt"), "kwargs": saved[n].kwargs, "steps": STEPS}
        for i, n in enumerate(names)
    ]
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf_home")}
    report = run_without_hubtools(jobs, tmp_path / "child", env)
    assert_ran_without_hubtools(report, len(names))
    for i, n in enumerate(names):
        assert torch.equal(torch.load(tmp_path / f"{i}.pt", weights_only=True), saved[n].expected), n
    back = CondPDiffPipeline.from_pretrained(repos["cond"])
    assert type(back.condition_encoder) is paramgen_models.ConditionEncoder
    assert torch.equal(generate(back, saved["cond"].kwargs), saved["cond"].expected)
