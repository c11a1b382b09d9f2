"""COND P-DIFF on the real all-MiniLM-L6-v2: LoRA snapshots, a text-conditioned pipeline, PEFT adapter folders."""

import copy

import pytest
import torch

from hubtools.data.offline import DataUnavailable
from hubtools.testing import data_missing


@pytest.fixture(scope="module")
def minilm():
    try:
        from hubtools.paramgen.fortunes import load_minilm

        return load_minilm()
    except DataUnavailable as err:
        data_missing(err)


def test_generated_adapter_loads_with_peft_and_matches_state_dict(minilm, tmp_path):
    from peft import PeftModel, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModel

    from hubtools.data.offline import minilm_path
    from hubtools.paramgen import ParamSpec
    from hubtools.paramgen.fortunes import lora_config
    from hubtools.paramgen.lora import write_peft_adapter

    base, tok = minilm
    model = get_peft_model(copy.deepcopy(base), lora_config(r=1))
    spec = ParamSpec.from_peft(model)
    assert spec.dim == 6 * 2 * (384 + 384) and all("lora_" in n for n in spec.names)
    assert spec.names == sorted(spec.names)
    vec = torch.randn(spec.dim, generator=torch.Generator().manual_seed(0)) * 0.05
    folder = write_peft_adapter(
        vec,
        spec,
        model.peft_config["default"],
        tmp_path / "adapter",
        base_model_name_or_path=str(minilm_path()),
    )
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    set_peft_model_state_dict(model, spec.unflatten(vec))
    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_path()), str(folder)).eval()
    batch = tok(["The computer is down.", "Love is blind."], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = model.eval()(**batch).last_hidden_state
        b = loaded(**batch).last_hidden_state
        c = base(**batch).last_hidden_state
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(b, c, atol=1e-3)  # the adapter changes the model


def test_cond_pdiff_end_to_end_from_task_description(minilm, tmp_path):
    """Tiny but real: LoRA snapshots of 2 fortunes tasks -> COND P-DIFF -> adapter from a description."""
    from peft import PeftModel

    from hubtools.paramgen import CondPDiffPipeline, PDiffTrainConfig, embed_texts, train_cond_pdiff
    from hubtools.paramgen.fortunes import (
        PRETEXT_TASK,
        TRAIN_TASKS,
        fit_head,
        load_task,
        lora_config,
        make_lora_trainer,
    )
    from hubtools.paramgen.lora import collect_lora_checkpoints, write_peft_adapter
    from hubtools.paramgen.publish import generated_adapter_card

    base, tok = minilm
    tasks = {t.name: t for t in TRAIN_TASKS[:2]}
    data = {n: load_task(t, tok, n_train=8, n_test=4, max_length=16) for n, t in tasks.items()}
    head = fit_head(base, load_task(PRETEXT_TASK, tok, n_train=8, n_test=4, max_length=16), epochs=5)
    sets = collect_lora_checkpoints(
        base,
        lora_config(r=1),
        {n: n for n in tasks},
        make_lora_trainer(head, data, steps=4, batch_size=4),
        last_n_steps=3,
    )
    assert [len(s) for s in sets.values()] == [3, 3]
    first = next(iter(sets.values()))
    assert not torch.equal(first.params[0], first.params[2])  # snapshots of successive steps differ
    conditions = embed_texts(base, tok, [t.description for t in tasks.values()])
    cfg = PDiffTrainConfig(
        output_dir=tmp_path / "gen",
        ae_steps=3,
        ddpm_steps=3,
        dec_channels=(4, 8, 8, 4),
        denoiser_channels=(4, 8, 8, 8),
        log_every=1,
    )
    pipe, _ = train_cond_pdiff(sets, conditions, cfg, text_encoder=base, tokenizer=tok)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    described = pipe(
        condition="Decide whether a quotation is about computers or about food.",
        num_models=2,
        generator=gen,
        num_inference_steps=3,
    ).params
    assert described.shape == (2, first.spec.dim)
    pipe.save_pretrained(tmp_path / "pipe")
    back = CondPDiffPipeline.from_pretrained(tmp_path / "pipe")
    back.set_progress_bar_config(disable=True)
    assert type(back.text_encoder).__name__ == "BertModel"
    again = back(
        condition="Decide whether a quotation is about computers or about food.",
        num_models=2,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=3,
    ).params
    assert torch.allclose(again, described, atol=1e-5)
    card = generated_adapter_card(
        "sentence-transformers/all-MiniLM-L6-v2", "me/cond-pdiff", "computers or food", 0
    )
    folder = write_peft_adapter(
        described[0], first.spec, lora_config(r=1), tmp_path / "adapter", "minilm", card=card
    )
    assert "**generated**" in (folder / "README.md").read_text()
    PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
