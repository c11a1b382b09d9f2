"""The embedding step (hubtools.data.embed): tiny encoders built from configs, real images from scikit-image
and scikit-learn, the real all-MiniLM-L6-v2 weights, and the local Hub server for Hub ids.

Every expected embedding is computed here from the model called directly (forward pass + pooling written
in the test), not by the module under test.
"""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hubtools.data.embed import (
    EncoderError,
    ImageEncoder,
    TextEncoder,
    embed_command,
    embed_dataset,
    embed_fn_from_flags,
    make_embed_fn,
    to_rgb_image,
)
from hubtools.data.offline import DataUnavailable, minilm_path
from hubtools.testing import data_missing

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<bos>", "<eos>"] + (
    "a photo of the cat dog tabby coffee cup woman astronaut digit zero one two seven on in red green".split()
)
CAPTIONS = [
    "a photo of a tabby cat",
    "a cup of coffee",
    "the astronaut",
    "a red digit seven",
    "one green cup in a photo of the woman",
    "dog",
    "a photo of a cat on a cup of coffee in the red astronaut photo",
    "two",
    "zero one two seven",
    "a woman",
    "the tabby cat in a cup",
    "a photo of the digit zero",
]


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "clip":  # CLIP pools the text at its end-of-text token
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", 4), ("<eos>", 5)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=backend,
            unk_token="[UNK]",
            pad_token="[PAD]",
            bos_token="<bos>",
            eos_token="<eos>",
        )
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def enc_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random CLIP, ViT, DINOv2 and BERT folders, each with its processor or tokenizer."""
    from transformers import (
        BertConfig,
        BertModel,
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        Dinov2Config,
        Dinov2Model,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    root = tmp_path_factory.mktemp("encoders")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    torch.manual_seed(0)
    clip = CLIPConfig(
        text_config=dict(
            vocab_size=len(WORDS),
            max_position_embeddings=24,
            bos_token_id=4,
            eos_token_id=5,
            pad_token_id=0,
            **small,
        ),
        vision_config=dict(image_size=32, patch_size=8, **small),
        projection_dim=24,
    )
    CLIPModel(clip).save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip"
    )
    _tokenizer("clip").save_pretrained(root / "clip")
    vit_proc = ViTImageProcessor(size={"height": 32, "width": 32})
    ViTModel(ViTConfig(image_size=32, patch_size=8, **small)).save_pretrained(root / "vit")
    vit_proc.save_pretrained(root / "vit")
    Dinov2Model(Dinov2Config(image_size=32, patch_size=8, **small)).save_pretrained(root / "dinov2")
    vit_proc.save_pretrained(root / "dinov2")
    BertModel(BertConfig(vocab_size=len(WORDS), max_position_embeddings=64, **small)).save_pretrained(
        root / "bert"
    )
    _tokenizer("bert").save_pretrained(root / "bert")
    return {name: root / name for name in ("clip", "vit", "dinov2", "bert")}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Real photos of different sizes (scikit-image) and real 8x8 grayscale digits (scikit-learn)."""
    try:
        from skimage import data
        from sklearn.datasets import load_digits
    except ImportError as exc:
        data_missing(f"{exc}: pip install scikit-image scikit-learn")
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.retina()[300:900, 300:1000]]
    digits = [(d * 16).clip(0, 255).astype(np.uint8) for d in load_digits().images[:8]]  # HxW grayscale
    return photos + digits


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.detach().double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _pixels(folder: Path, imgs: list) -> torch.Tensor:
    from PIL import Image
    from transformers import AutoImageProcessor

    rgb = [Image.fromarray(i).convert("RGB") for i in imgs]
    return AutoImageProcessor.from_pretrained(folder)(images=rgb, return_tensors="pt")["pixel_values"]


def test_clip_image_and_text_are_projected_into_one_space(enc_dirs, images):
    from transformers import AutoTokenizer, CLIPModel

    img_enc, txt_enc = (
        ImageEncoder(enc_dirs["clip"], device="cpu"),
        TextEncoder(enc_dirs["clip"], device="cpu"),
    )
    got_img, got_txt = img_enc.encode(images), txt_enc.encode(CAPTIONS)

    model = CLIPModel.from_pretrained(enc_dirs["clip"]).eval()
    tok = AutoTokenizer.from_pretrained(enc_dirs["clip"])
    with torch.no_grad():
        vision = model.vision_model(pixel_values=_pixels(enc_dirs["clip"], images)).last_hidden_state
        want_img = model.visual_projection(model.vision_model.post_layernorm(vision[:, 0]))
        want_txt = []
        for text in CAPTIONS:  # one caption at a time: no padding at all
            ids = tok(text, return_tensors="pt")["input_ids"]
            h = model.text_model(input_ids=ids).last_hidden_state  # after the final layer norm
            eos = int((ids[0] == 5).nonzero()[0, 0])  # CLIP's text vector is the end-of-text token's state
            want_txt.append(model.text_projection(h[0, eos]))
    np.testing.assert_allclose(got_img, _unit(want_img), atol=1e-5)
    np.testing.assert_allclose(got_txt, _unit(torch.stack(want_txt)), atol=1e-5)
    assert got_img.shape == (len(images), 24) and got_txt.shape == (len(CAPTIONS), 24)
    assert img_enc.pooling == txt_enc.pooling == "projection" and img_enc.dim == txt_enc.dim == 24
    assert img_enc.encoder_id == txt_enc.encoder_id and img_enc.model is txt_enc.model  # loaded once
    for got in (got_img, got_txt):
        assert got.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_vision_transformers_use_the_class_token(enc_dirs, images, family):
    from transformers import AutoModel

    enc = ImageEncoder(enc_dirs[family], device="cpu")
    model = AutoModel.from_pretrained(enc_dirs[family]).eval()
    with torch.no_grad():
        h = model(pixel_values=_pixels(enc_dirs[family], images)).last_hidden_state
    assert enc.pooling == "cls" and enc.dim == 32
    np.testing.assert_allclose(enc.encode(images), _unit(h[:, 0]), atol=1e-5)
    # an explicit pooling gives other vectors, so it is part of the encoder id
    mean = ImageEncoder(enc_dirs[family], device="cpu", pooling="mean")
    np.testing.assert_allclose(mean.encode(images), _unit(h.mean(1)), atol=1e-5)
    assert mean.encoder_id == enc.encoder_id + "+mean"
    assert ImageEncoder(enc_dirs[family], device="cpu", pooling="cls").encoder_id == enc.encoder_id


def test_text_encoder_masked_mean_equals_unpadded_mean(enc_dirs):
    from transformers import AutoModel, AutoTokenizer

    enc = TextEncoder(enc_dirs["bert"], device="cpu")
    model, tok = (
        AutoModel.from_pretrained(enc_dirs["bert"]).eval(),
        AutoTokenizer.from_pretrained(enc_dirs["bert"]),
    )
    with torch.no_grad():  # each caption alone: the mean over all of its tokens, no padding to mask
        want = torch.stack(
            [model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in CAPTIONS]
        )
    assert enc.pooling == "mean"
    np.testing.assert_allclose(enc.encode(CAPTIONS), _unit(want), atol=1e-5)


def test_real_minilm_matches_the_sentence_transformers_pooling():
    """The real all-MiniLM-L6-v2: mean pooling from its 1_Pooling config, its 256-token limit, and the same
    vectors as infogrowth's TransformersTextEmbedder (which TextEncoder supersedes)."""
    from transformers import AutoModel, AutoTokenizer

    from hubtools.data.infogrowth import TransformersTextEmbedder

    try:
        path = minilm_path()
    except DataUnavailable as exc:
        data_missing(exc)
    enc = TextEncoder(path, device="cpu", batch_size=3)
    assert enc.pooling == "mean" and enc.max_length == 256 and enc.dim == 384
    model, tok = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    texts = CAPTIONS[:6]
    with torch.no_grad():
        want = torch.stack([model(**tok(t, return_tensors="pt")).last_hidden_state[0].mean(0) for t in texts])
    got = enc.encode(texts)
    np.testing.assert_allclose(got, _unit(want), atol=1e-5)
    np.testing.assert_allclose(got, TransformersTextEmbedder(path)({"text": texts})["txt_emb"], atol=1e-5)


def test_batch_size_does_not_change_the_embeddings(enc_dirs, images):
    texts = CAPTIONS * 2
    for cls, folder, inputs in (
        (ImageEncoder, enc_dirs["dinov2"], images),
        (TextEncoder, enc_dirs["bert"], texts),
        (TextEncoder, enc_dirs["clip"], texts),
    ):
        runs = [cls(folder, device="cpu", batch_size=b).encode(inputs) for b in (1, 7, len(inputs))]
        assert runs[0].shape == (len(inputs), 32 if folder.name != "clip" else 24)
        np.testing.assert_allclose(runs[1], runs[0], atol=1e-5)
        np.testing.assert_allclose(runs[2], runs[0], atol=1e-5)


def test_image_inputs_grayscale_arrays_pil_and_datasets_dicts_agree(enc_dirs, images):
    from PIL import Image

    enc = ImageEncoder(enc_dirs["vit"], device="cpu")
    gray = images[4]  # a real 8x8 digit, HxW uint8
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    png = io.BytesIO()
    Image.fromarray(gray).save(png, format="PNG")
    variants = [
        gray,
        gray[:, :, None],
        rgb,
        np.dstack([rgb, np.full_like(gray, 255)]),  # RGBA: alpha dropped
        Image.fromarray(gray),  # PIL "L"
        gray.astype(np.int64).tolist(),  # nested lists, e.g. a datasets Array2D
        {"bytes": png.getvalue(), "path": None},  # a datasets Image feature with decode=False
    ]
    got = enc.encode(variants)
    np.testing.assert_allclose(got, np.repeat(got[:1], len(variants), axis=0), atol=1e-6)
    assert to_rgb_image(gray).mode == "RGB" and to_rgb_image(gray).size == (8, 8)
    assert enc.encode([]).shape == (0, 32)

    with pytest.raises(EncoderError, match=r"column 'image', row 1: .*float pixels are ambiguous"):
        enc.encode([gray, gray / 255.0], column="image")
    with pytest.raises(EncoderError, match=r"image input 0: expected an HxW or HxWxC"):
        enc.encode([np.zeros((3, 8, 8), np.uint8)])
    with pytest.raises(EncoderError, match=r"image input 2: cannot read the image"):
        enc.encode([gray, gray, {"bytes": b"not a png", "path": None}])
    with pytest.raises(EncoderError, match=r"image input 1: pixel values must lie in 0..255"):
        enc.encode([gray, gray.astype(np.int64) * 300])
    with pytest.raises(EncoderError, match=r"text input 1: expected a string, got NoneType"):
        TextEncoder(enc_dirs["bert"], device="cpu").encode(["a cat", None])


def test_embed_dataset_adds_fixed_length_float32_columns_with_progress(enc_dirs, images, capfd):
    from datasets import Dataset, Features, Image, List, Value

    photos = [Image().encode_example(i) for i in images]
    ds = Dataset.from_dict(
        {"image": photos, "text": CAPTIONS[: len(images)]},
        features=Features({"image": Image(), "text": Value("string")}),
    )
    fn = make_embed_fn(
        ImageEncoder(enc_dirs["clip"], device="cpu"), TextEncoder(enc_dirs["clip"], device="cpu")
    )
    out = embed_dataset(ds, fn, batch_size=5)
    assert out.features["img_emb"] == List(Value("float32"), length=24)
    assert out.features["txt_emb"] == List(Value("float32"), length=24)
    assert out.column_names == ["image", "text", "img_emb", "txt_emb"]
    np.testing.assert_allclose(
        np.asarray(out["img_emb"], np.float32), fn.image_encoder.encode(images), atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(out["txt_emb"], np.float32), fn.text_encoder.encode(ds["text"]), atol=1e-6
    )
    assert fn.encoder_id == fn.image_encoder.encoder_id
    assert f"embed {fn.encoder_id}" in capfd.readouterr().err  # the progress bar names the encoder

    # the fingerprint names source + encoder: same inputs give the same one, another encoder another
    again = embed_dataset(ds, fn, batch_size=3, show_progress=False)
    vit = make_embed_fn(ImageEncoder(enc_dirs["vit"], device="cpu"))
    other = embed_dataset(ds, vit, show_progress=False)
    assert again._fingerprint == out._fingerprint != other._fingerprint
    assert other.features["img_emb"].length == 32
    shifted = embed_dataset(ds.select(range(1, len(ds))), fn, show_progress=False)
    assert shifted._fingerprint != out._fingerprint
    np.testing.assert_allclose(shifted["img_emb"], out["img_emb"][1:], atol=1e-6)

    # two CPU worker processes give the same columns, also after the parent ran torch on several threads
    # (a forked worker entering that OpenMP pool would hang)
    torch.set_num_threads(2)
    fn.text_encoder.encode(CAPTIONS * 8)
    two = embed_dataset(ds, fn, batch_size=4, num_proc=2, show_progress=False)
    torch.set_num_threads(1)
    np.testing.assert_allclose(two["txt_emb"], out["txt_emb"], atol=1e-6)
    fn.image_encoder.device = torch.device("cuda")  # as built with device="cuda": CUDA cannot be forked
    with pytest.raises(EncoderError, match=r"num_proc=2 forks worker processes, which cannot use the GPU"):
        embed_dataset(ds, fn, num_proc=2)
    fn.image_encoder.device = torch.device("cpu")
    # an IterableDataset is mapped lazily, with the same types and values
    lazy = embed_dataset(ds.to_iterable_dataset(), fn, batch_size=5)
    assert lazy.features["img_emb"] == List(Value("float32"), length=24)
    np.testing.assert_allclose([r["img_emb"] for r in lazy], out["img_emb"], atol=1e-6)

    with pytest.raises(EncoderError, match=r"no column\(s\) \['caption'\] to embed"):
        embed_dataset(ds, make_embed_fn(text_encoder=fn.text_encoder, text_column="caption"))


def test_embed_fn_feeds_the_infogrowth_curator(enc_dirs, images):
    from hubtools.data.infogrowth import InfoGrowth

    fn, encoder_id = embed_fn_from_flags(
        str(enc_dirs["clip"]), str(enc_dirs["clip"]), "image", "text", "img_emb", "txt_emb", batch_size=4
    )
    assert encoder_id == fn.encoder_id == ImageEncoder(enc_dirs["clip"]).encoder_id
    rows = {"image": images, "text": CAPTIONS[: len(images)]}
    ig = InfoGrowth("image-text", embed_fn=fn, encoder_id=encoder_id, index="exact", delta=-1.0)
    ig.fit_seed({k: v[:6] for k, v in rows.items()})
    ig.process_batch({k: v[6:] for k, v in rows.items()})
    img, txt = fn.image_encoder.encode(images), fn.text_encoder.encode(rows["text"])
    np.testing.assert_allclose(ig.results()["ig_align"], np.sum(img * txt, axis=1), atol=1e-5)
    assert ig.settings()["encoder_id"] == encoder_id

    assert embed_fn_from_flags(None, None) == (None, None)
    with pytest.raises(EncoderError, match="one joint image-text model"):
        embed_fn_from_flags(str(enc_dirs["vit"]), str(enc_dirs["bert"]))
    with pytest.raises(EncoderError, match="--text-emb-column"):
        embed_fn_from_flags(None, str(enc_dirs["bert"]), text_emb_column=None)
    img_only, img_id = embed_fn_from_flags(str(enc_dirs["dinov2"]), None, emb_column="emb")
    assert set(img_only({"image": images[:2]})) == {"emb"} and img_id.startswith("dinov2@")


def test_encoder_id_follows_the_files_that_change_the_vectors(enc_dirs, tmp_path):
    import shutil

    copy = tmp_path / "dinov2"
    shutil.copytree(enc_dirs["dinov2"], copy)
    base = ImageEncoder(copy, device="cpu").encoder_id
    assert base.startswith("dinov2@") and base == ImageEncoder(enc_dirs["dinov2"]).encoder_id
    (copy / "README.md").write_text("a card edit\n")
    assert ImageEncoder(copy, device="cpu").encoder_id == base
    cfg = json.loads((copy / "preprocessor_config.json").read_text())
    cfg["image_mean"] = [0.4, 0.4, 0.4]
    (copy / "preprocessor_config.json").write_text(json.dumps(cfg))
    assert ImageEncoder(copy, device="cpu").encoder_id != base


def test_bad_paths_and_folders_give_errors_naming_them(enc_dirs, tmp_path):
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(EncoderError, match=f"{missing}: no such model folder"):
        ImageEncoder(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        EncoderError, match=r"empty: is not a transformers model folder \(it has no config.json\)"
    ):
        TextEncoder(tmp_path / "empty")
    with pytest.raises(EncoderError, match="bert: has no preprocessor_config.json"):
        ImageEncoder(enc_dirs["bert"])
    with pytest.raises(EncoderError, match="pooling 'cls' does not fit this model"):
        TextEncoder(enc_dirs["clip"], pooling="cls")
    with pytest.raises(EncoderError, match="pooling: expected one of"):
        TextEncoder(enc_dirs["bert"], pooling="max")
    with pytest.raises(EncoderError, match="revision .* applies to Hub ids only"):
        ImageEncoder(enc_dirs["vit"], revision="main")

    r = CliRunner().invoke(
        embed_command,
        ["--dataset", str(tmp_path), "--image-encoder", str(missing), "--out", str(tmp_path / "o")],
    )
    assert r.exit_code == 1 and f"{missing}: no such model folder" in r.output
    assert not (tmp_path / "o").exists()


def test_hub_repo_id_loads_at_a_pinned_commit(enc_dirs, hub, repo_id):
    from huggingface_hub import HfApi

    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=enc_dirs["bert"]).oid
    enc = TextEncoder(repo_id, device="cpu")
    assert enc.encoder_id == f"{repo_id}@{first}"
    np.testing.assert_allclose(
        enc.encode(CAPTIONS), TextEncoder(enc_dirs["bert"]).encode(CAPTIONS), atol=1e-6
    )

    api.upload_file(path_or_fileobj=b"# a card\n", path_in_repo="README.md", repo_id=repo_id)
    assert TextEncoder(repo_id, device="cpu").encoder_id != enc.encoder_id  # a new commit is a new revision
    assert TextEncoder(repo_id, revision=first, device="cpu").encoder_id == enc.encoder_id
    with pytest.raises(
        EncoderError, match=f"{repo_id}: not a local model folder and not a model repo on {hub.url}"
    ):
        TextEncoder(repo_id, revision="no-such-branch")
    with pytest.raises(EncoderError, match=f"{hub.user}/missing-repo: not a local model folder"):
        ImageEncoder(f"{hub.user}/missing-repo")


def test_cli_writes_a_dataset_that_loads_with_its_embeddings(enc_dirs, images, tmp_path, repo_id):
    from datasets import Dataset, DatasetDict, Features, Image, List, Value, load_dataset

    feats = Features({"image": Image(), "label": Value("int64")})
    src = tmp_path / "src"
    DatasetDict(
        {
            "trusted": Dataset.from_dict({"image": images[:5], "label": list(range(5))}, features=feats),
            "train": Dataset.from_dict(
                {"image": images[5:], "label": list(range(len(images) - 5))}, features=feats
            ),
        }
    ).save_to_disk(src)
    out = tmp_path / "embedded"
    args = ["--dataset", str(src), "--image-encoder", str(enc_dirs["dinov2"]), "--batch-size", "4"]
    r = CliRunner().invoke(embed_command, [*args, "--out", str(out), "--push-to-hub", repo_id])
    assert r.exit_code == 0, r.output
    assert "trusted=5 train=7" in r.output and "img_emb[32]" in r.output

    enc = ImageEncoder(enc_dirs["dinov2"], device="cpu")
    for loaded in (load_dataset(str(out)), load_dataset(repo_id)):
        assert set(loaded) == {"trusted", "train"}
        assert loaded["train"].features["img_emb"] == List(Value("float32"), length=32)
        assert loaded["train"]["label"] == list(range(7))
        np.testing.assert_array_equal(
            np.asarray(loaded["trusted"]["img_emb"], np.float32), enc.encode(images[:5])
        )
    record = json.loads((out / "embed.json").read_text())
    assert record["encoder_id"] == enc.encoder_id and record["encoders"]["img_emb"]["pooling"] == "cls"
    assert "dinov2@" in (out / "README.md").read_text()

    # a Hub dataset id as the source: a second encoder's column beside the first
    r = CliRunner().invoke(
        embed_command,
        [
            "--dataset",
            repo_id,
            "--split",
            "train",
            "--image-encoder",
            str(enc_dirs["vit"]),
            "--emb-column",
            "vit_emb",
        ]
        + ["--out", str(tmp_path / "both")],
    )
    assert r.exit_code == 0, r.output
    both = load_dataset(str(tmp_path / "both"), split="train")
    assert both.features["vit_emb"].length == 32 and both.features["img_emb"].length == 32
    np.testing.assert_allclose(both["vit_emb"], ImageEncoder(enc_dirs["vit"]).encode(images[5:]), atol=1e-6)

    # one split, picked by name (a flag, or a --config file's list); a missing column is named before any work
    r = CliRunner().invoke(embed_command, [*args, "--split", "train", "--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    assert set(load_dataset(str(tmp_path / "one"))) == {"train"}
    cfg = tmp_path / "embed.yaml"
    cfg.write_text(f"dataset: {src}\nimage_encoder: {enc_dirs['vit']}\nsplit: [trusted]\nbatch_size: 2\n")
    r = CliRunner().invoke(embed_command, ["--config", str(cfg), "--out", str(tmp_path / "cfg")])
    assert r.exit_code == 0, r.output
    assert set(load_dataset(str(tmp_path / "cfg"))) == {"trusted"} and "vit@" in r.output
    r = CliRunner().invoke(embed_command, [*args, "--image-column", "photo", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "no column(s) ['photo'] to embed" in r.output


def test_infogrowth_command_embeds_with_image_encoder(enc_dirs, images, tmp_path):
    """``hubtools data infogrowth --image-encoder``: embeddings computed on the way, recorded as the encoder."""
    from datasets import Dataset, DatasetDict, Features, Image, Value, load_dataset

    from hubtools.cli import main

    feats = Features({"image": Image(), "label": Value("int64")})
    labels = [i % 2 for i in range(len(images))]
    src = tmp_path / "src"
    DatasetDict(
        {
            "trusted": Dataset.from_dict({"image": images, "label": labels}, features=feats),
            "train": Dataset.from_dict({"image": images[::-1], "label": labels}, features=feats),
        }
    ).save_to_disk(src)
    out = tmp_path / "sel"
    args = ["data", "infogrowth", "--dataset", str(src), "--label-column", "label", "--score", "none"]
    args += ["--image-encoder", str(enc_dirs["vit"]), "--budget", "1.0", "--dup-eps", "0", "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    enc = ImageEncoder(enc_dirs["vit"], device="cpu")
    train = load_dataset(str(out), split="train")
    assert train.num_rows == 2 * len(images)  # no cleaner, budget 1.0: every row
    order = np.asarray(train["ig_arrival"])
    source = images + images[::-1]
    np.testing.assert_allclose(
        np.asarray(train["img_emb"], np.float32), enc.encode([source[i] for i in order]), atol=1e-6
    )
    record = json.loads((out / "infogrowth.json").read_text())
    assert record["settings"]["encoder_id"] == enc.encoder_id
    # a named --encoder-id that disagrees with the encoder is refused
    bad = CliRunner().invoke(main, [*args, "--encoder-id", "something-else"])
    assert bad.exit_code == 1 and "disagrees" in bad.output
