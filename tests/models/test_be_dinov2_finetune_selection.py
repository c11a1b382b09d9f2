"""`be-dinov2 finetune`: best-validation-epoch selection, the exported classifier (class names, training size,
fundus preprocessing) reproduced by `pipeline()` without hubtools, and the `FundusImageProcessor`.

Data: the real fundus photo shipped with scikit-image (`skimage.data.retina()`, CC0), downscaled, rotated,
shifted on a black non-square frame and dimmed; the label is the dimming grade (5 ordinal grades named as
DR grades, so referable metrics are on by default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from bedinov2_testutils import tiny_dinov2
from click.testing import CliRunner
from PIL import Image
from remote_code_utils import HIDE_HUBTOOLS
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, roc_auc_score
from transformers import AutoImageProcessor, AutoModelForImageClassification

from hubtools.cli import main
from hubtools.errors import ConfigError
from hubtools.models.be_dinov2.downstream import class_order, predict_proba
from hubtools.models.be_dinov2.metrics import balanced_accuracy, referable_metrics
from hubtools.models.be_dinov2.processing_fundus import FundusImageProcessor
from hubtools.pretrain.data import LabelledImages

REPO_ROOT = str(Path(__file__).resolve().parents[2])
GRADES = ["no_dr", "mild", "moderate", "severe", "proliferative"]  # alphabetical order differs
BASE_SIZE, TRAIN_SIZE = 16, 20


def _fundus_folder(root: Path, per_class: int = 12) -> None:
    """Class-per-subfolder PNGs of the real retina photo; grade g is brightness x (1 - 0.15 g)."""
    from skimage import data

    photo = Image.fromarray(data.retina()).resize((72, 72), Image.Resampling.BILINEAR)
    rng = np.random.default_rng(0)
    for g, name in enumerate(GRADES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            disc = np.asarray(photo.rotate(float(rng.uniform(0, 360)), Image.Resampling.BILINEAR), np.float64)
            disc = np.clip(disc * (1.0 - 0.15 * g) * rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
            canvas = np.zeros((90, 110, 3), np.uint8)
            y, x = rng.integers(0, 90 - 72), rng.integers(0, 110 - 72)
            canvas[y : y + 72, x : x + 72] = disc
            Image.fromarray(canvas).save(root / name / f"{i:02d}.png")
    (root / "classes.txt").write_text("\n".join(GRADES) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fine-tune run on the fundus folder (base image_size 16, trained at 20)."""
    tmp = tmp_path_factory.mktemp("ft")
    base = tmp / "base"
    tiny_dinov2(
        num_hidden_layers=4, hidden_size=32, num_attention_heads=2, patch_size=4, image_size=BASE_SIZE
    ).save_pretrained(base)
    _fundus_folder(tmp / "fundus")
    _finetune(tmp)
    return tmp


def _finetune(tmp: Path) -> None:
    args = ["--model", str(tmp / "base"), "--data", str(tmp / "fundus"), "--image-size", str(TRAIN_SIZE)]
    args += ["--mode", "full", "--epochs", "6", "--batch-size", "16", "--lr", "0.003"]
    result = CliRunner().invoke(
        main, ["be-dinov2", "finetune", *args, "--out", str(tmp / "out")], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output


def _files_in_label_order(root: Path) -> list[tuple[Path, int]]:
    return [(f, c) for c, name in enumerate(GRADES) for f in sorted((root / name).glob("*.png"))]


def test_selected_epoch_is_the_best_validation_row_and_test_metrics_are_the_exported_models(
    run: Path,
) -> None:
    results = json.loads((run / "out" / "results.json").read_text())
    assert results["class_order"] == "classes.txt" and results["class_names"] == GRADES
    rows = results["val_history"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]  # every epoch, not one row at the end
    scores = [r["metrics"]["kappa_quadratic"] for r in rows]
    best = int(np.argmax(scores))
    selection = results["selection"]
    assert selection["metric"] == "qwk" and selection["epoch"] == rows[best]["epoch"]
    assert selection["value"] == scores[best] and results["val"] == rows[best]["metrics"]
    assert len(set(scores)) > 1, "validation kappa never changed: the selection is not exercised"
    # The trainer's log holds the same validation rows.
    logged = [json.loads(x) for x in (run / "out" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_kappa_quadratic"] for r in logged if "val_kappa_quadratic" in r] == pytest.approx(scores)

    # The exported model, on the test split of split.json, reproduces the reported test metrics.
    model_dir = run / "out" / "model"
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert model.config.id2label == dict(enumerate(GRADES))
    assert model.config.label2id == {name: i for i, name in enumerate(GRADES)}
    processor_config = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor_config["size"] == TRAIN_SIZE != model.config.image_size
    assert processor_config["crop_fov"] is True and processor_config["clahe"] is False

    processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)
    files = _files_in_label_order(run / "fundus")
    split = json.loads((run / "out" / "split.json").read_text())

    def predict(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        chosen = [files[i] for i in indices]
        pixels = processor([Image.open(f) for f, _ in chosen], return_tensors="pt")["pixel_values"]
        y = np.array([c for _, c in chosen])
        return y, predict_proba(model, LabelledImages(pixels, torch.from_numpy(y), GRADES))

    # The exported weights are the selected epoch's, not the last epoch's.
    y_val, p_val = predict(split["val"])
    assert cohen_kappa_score(y_val, p_val.argmax(1), weights="quadratic") == pytest.approx(
        scores[best], abs=1e-9
    )
    y, probs = predict(split["test"])
    test = results["test"]
    assert test["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(y, probs.argmax(1), weights="quadratic"), abs=1e-9
    )
    assert test["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)), abs=1e-9)
    # Referable DR (grades >= 2, score p2 + p3 + p4) is on by default for the 5 DR grades.
    assert test["referable"]["auroc"] == pytest.approx(roc_auc_score(y >= 2, probs[:, 2:].sum(1)), abs=1e-9)


def test_rerun_resumes_with_the_same_rows_and_selection(run: Path) -> None:
    """The rows and the selected weights live in the trainer's checkpoint: running the finished command
    again resumes from it and writes the same report and weights."""
    before = (run / "out" / "results.json").read_bytes()
    weights = (run / "out" / "model" / "model.safetensors").read_bytes()
    _finetune(run)
    assert (run / "out" / "results.json").read_bytes() == before
    assert (run / "out" / "model" / "model.safetensors").read_bytes() == weights


_PIPELINE_CHILD = HIDE_HUBTOOLS + textwrap.dedent(
    """
    import json
    from transformers import pipeline
    model_dir, out, *images = sys.argv[1:]
    classify = pipeline("image-classification", model=model_dir, trust_remote_code=True)
    json.dump([classify(path, top_k=5) for path in images], open(out, "w"))
    """
)


def test_pipeline_without_hubtools_predicts_as_the_evaluation(run: Path) -> None:
    model_dir = run / "out" / "model"
    files = _files_in_label_order(run / "fundus")
    test_idx = json.loads((run / "out" / "split.json").read_text())["test"]
    paths = [str(files[i][0]) for i in test_idx]
    out = run / "pipeline.json"
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _PIPELINE_CHILD.format(repo=REPO_ROOT), str(model_dir), str(out), *paths],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = json.loads(out.read_text())

    # The evaluation path of the fine-tune: the training data pipeline (class_folder_images with the
    # processor the command built) and predict_proba on the exported weights.
    from hubtools.models.be_dinov2.downstream import class_folder_images

    processor = FundusImageProcessor(size=TRAIN_SIZE, crop_fov=True, clahe=False)
    data, order = class_folder_images(run / "fundus", processor)
    assert order == "classes.txt"
    model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True)
    probs = predict_proba(model, data.subset(test_idx))
    for row, p in zip(predictions, probs, strict=True):
        assert row[0]["label"] == GRADES[int(p.argmax())]
        assert {r["label"]: r["score"] for r in row} == pytest.approx(
            dict(zip(GRADES, p.tolist(), strict=True)), abs=1e-5
        )


def test_few_shot_folds_each_select_their_best_epoch(run: Path, tmp_path: Path) -> None:
    args = ["--model", str(run / "base"), "--data", str(run / "fundus"), "--image-size", str(TRAIN_SIZE)]
    args += ["--classes", ",".join(GRADES), "--few-shot", "3", "--folds", "2", "--epochs", "3", "--select"]
    args += ["balanced_accuracy", "--lr", "0.003", "--mode", "full", "--out", str(tmp_path / "fs")]
    result = CliRunner().invoke(main, ["be-dinov2", "finetune", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "fs" / "results.json").read_text())
    assert report["class_order"] == "--classes"
    shot = report["few_shot"]["3-shot"]
    assert shot["referable_auroc"]["n"] == 2
    for fold in shot["folds"]:
        scores = [r["metrics"]["balanced_accuracy"] for r in fold["val_history"]]
        assert len(scores) == 3 and fold["selection"]["metric"] == "balanced_accuracy"
        assert fold["selection"]["epoch"] == fold["val_history"][int(np.argmax(scores))]["epoch"]


def test_class_order_explicit_file_or_alphabetical(tmp_path: Path) -> None:
    for name in GRADES:
        (tmp_path / name).mkdir()
    assert class_order(tmp_path) == (sorted(GRADES), "alphabetical")
    (tmp_path / "classes.txt").write_text("\n".join(GRADES) + "\n")
    assert class_order(tmp_path) == (GRADES, "classes.txt")
    given = GRADES[::-1]
    assert class_order(tmp_path, given) == (given, "--classes")
    with pytest.raises(ConfigError, match="no folder for"):
        class_order(tmp_path, [*GRADES[:4], "ungradable"])
    with pytest.raises(ConfigError, match="repeats"):
        class_order(tmp_path, [*GRADES, "mild"])


def test_referable_and_balanced_accuracy_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 200)
    probs = rng.dirichlet(np.ones(5), 200)
    for k in (1, 2, 3):
        expected = roc_auc_score(y >= k, probs[:, k:].sum(1))
        assert referable_metrics(y, probs, k)["auroc"] == pytest.approx(expected, abs=1e-12)
    assert balanced_accuracy(y, probs.argmax(1), 5) == pytest.approx(
        balanced_accuracy_score(y, probs.argmax(1)), abs=1e-12
    )
    with pytest.raises(ValueError, match="threshold"):
        referable_metrics(y, probs, 5)


def _disc_image() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A bright off-centre disc (radius 37) on a dark, noisy, non-square frame; its exact box."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 15, size=(120, 150, 3)).astype(np.uint8)  # frame noise below the threshold
    yy, xx = np.mgrid[:120, :150]
    inside = (yy - 55) ** 2 + (xx - 80) ** 2 <= 37**2
    image[inside] = rng.integers(60, 230, size=(int(inside.sum()), 3)).astype(np.uint8)
    rows, cols = np.nonzero(inside.any(1))[0], np.nonzero(inside.any(0))[0]
    return image, (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)


def test_fov_crop_finds_the_disc_and_pads_to_a_square() -> None:
    image, box = _disc_image()
    processor = FundusImageProcessor(size=32)
    found = processor.field_of_view_box(image)
    assert np.abs(np.subtract(found, box)).max() <= 2
    cropped = processor.crop_field_of_view(image)
    side = max(box[2] - box[0], box[3] - box[1])
    assert cropped.shape[0] == cropped.shape[1] and abs(cropped.shape[0] - side) <= 2
    # The crop holds the whole disc: as many bright pixels as the original.
    assert (cropped.max(-1) > 20).sum() == (image.max(-1) > 20).sum()
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 32, 32)


def test_clahe_changes_the_image_and_keeps_shape_and_dtype() -> None:
    from skimage import data

    image = np.asarray(Image.fromarray(data.retina()).resize((96, 96)))
    processor = FundusImageProcessor(size=24, clahe=True)
    equalised = processor.apply_clahe(image)
    assert equalised.shape == image.shape and equalised.dtype == np.uint8
    assert np.abs(equalised.astype(int) - image.astype(int)).mean() > 1.0
    plain = FundusImageProcessor(size=24, clahe=False)(image)["pixel_values"]
    assert not np.allclose(processor(image)["pixel_values"], plain)


def test_processor_round_trip_and_import_without_skimage(tmp_path: Path) -> None:
    from skimage import data

    image = np.asarray(Image.fromarray(data.retina()).resize((64, 80)))
    processor = FundusImageProcessor(size=28, clahe=True, clahe_clip_limit=0.02, fov_threshold=15)
    processor.register_for_auto_class("AutoImageProcessor")
    processor.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert written["auto_map"] == {"AutoImageProcessor": "processing_fundus.FundusImageProcessor"}
    loaded = AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert type(loaded).__name__ == "FundusImageProcessor"
    for key in ("size", "crop_fov", "fov_threshold", "clahe", "clahe_clip_limit", "image_mean", "image_std"):
        assert getattr(loaded, key) == getattr(processor, key)
    np.testing.assert_array_equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])
    # clahe=False needs no scikit-image: the copied file runs with skimage blocked.
    child = textwrap.dedent(
        """
        import sys
        sys.modules["skimage"] = None
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        from processing_fundus import FundusImageProcessor
        x = FundusImageProcessor(size=8, clahe=False)(np.full((20, 30, 3), 200, np.uint8))["pixel_values"]
        assert x.shape == (1, 3, 8, 8)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", child, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
