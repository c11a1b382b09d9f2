"""LoRA generator Space (COND P-DIFF): type a task description, download a generated PEFT LoRA adapter.

The pipeline comes from the Hub repo in ``$LORA_GENERATOR_MODEL`` (default: the quickstart's
``quickstart/cond-pdiff-minilm-lora``: LoRA adapters of the real all-MiniLM-L6-v2 for fortunes-category tasks).
Its text encoder embeds the description (the condition); the sampled vector is written as a normal PEFT adapter
folder with the layout of the pipeline's ``lora_config.json`` and zipped for download.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hubtools import spaces

MODEL_ENV = "LORA_GENERATOR_MODEL"
DEFAULT_MODEL = "quickstart/cond-pdiff-minilm-lora"
LORA_CONFIG_FILE = "lora_config.json"  # written next to the pipeline by hubtools.paramgen.demo
PROBE_SENTENCES = ["The computer crashed again.", "Love is patient, love is kind."]


@dataclass
class LoraGeneratorSpace:
    repo_id: str
    pipe: Any
    lora_config: Any
    out_dir: Path

    @classmethod
    def load(cls, repo_id: str) -> LoraGeneratorSpace:
        from peft import PeftConfig

        from hubtools.paramgen import CondPDiffPipeline
        from hubtools.paramgen.pipelines import ddim_copy

        folder = spaces.snapshot(repo_id)
        pipe = ddim_copy(CondPDiffPipeline.from_pretrained(folder))  # DDIM: tens of steps instead of 1000
        pipe.set_progress_bar_config(disable=True)
        lora_config = PeftConfig.from_peft_type(**PeftConfig.from_json_file(str(folder / LORA_CONFIG_FILE)))
        return cls(repo_id, pipe, lora_config, Path(tempfile.mkdtemp(prefix="lora-generator-space-")))

    def generate(self, description: str, seed: int, steps: int) -> tuple[Path, Path, dict[str, Any]]:
        """(adapter folder, its zip, a report) for one adapter generated from ``description``."""
        from hubtools.paramgen.lora import write_peft_adapter
        from hubtools.paramgen.publish import generated_adapter_card

        vec = self.pipe(
            condition=description,
            num_models=1,
            generator=torch.Generator().manual_seed(seed),
            num_inference_steps=steps,
        ).params[0]
        spec = self.pipe.param_spec
        base = self.lora_config.base_model_name_or_path
        name = f"adapter-seed{seed}"
        folder = write_peft_adapter(
            vec,
            spec,
            self.lora_config,
            self.out_dir / name,
            card=generated_adapter_card(base, self.repo_id, description, seed),
        )
        archive = Path(shutil.make_archive(str(self.out_dir / name), "zip", folder))
        report = {
            "description": description,
            "seed": seed,
            "ddim_steps": steps,
            "generated_floats": spec.dim,
            "tensors": len(spec.names),
            "adapter_l2_norm": round(float(vec.norm()), 4),
            "nearest_training_task": self.nearest_task(description),
            "max_output_change_vs_base": self.output_change(folder),
        }
        return folder, archive, report

    @torch.no_grad()
    def nearest_task(self, description: str) -> str:
        """The training task whose description embedding is closest (cosine) to this one's."""
        emb = self.pipe.embed_text([description])
        tasks = self.pipe.condition_encoder.task_conditions
        sims = torch.nn.functional.cosine_similarity(emb, tasks)
        return f"{self.task_names()[int(sims.argmax())]} (cosine {float(sims.max()):.3f})"

    def task_names(self) -> list[str]:
        return list(self.pipe.task_names)

    @torch.no_grad()
    def output_change(self, folder: Path) -> float:
        """Load the adapter with PEFT on the pipeline's text encoder (the base it was generated for) and report the
        largest change it makes to the encoder's output on two probe sentences: proof it loads and acts."""
        from peft import PeftModel

        encoder = self.pipe.text_encoder
        batch = self.pipe.tokenizer(PROBE_SENTENCES, padding=True, return_tensors="pt")
        before = encoder(**batch).last_hidden_state
        adapted = PeftModel.from_pretrained(copy.deepcopy(encoder), str(folder)).eval()
        return round(float((adapted(**batch).last_hidden_state - before).abs().max()), 6)


def build_demo(repo_id: str | None = None):
    """The Blocks UI on the pipeline ``repo_id`` (default ``$LORA_GENERATOR_MODEL``, else the quickstart's)."""
    gr = spaces.gradio()
    space = LoraGeneratorSpace.load(repo_id or spaces.model_repo(MODEL_ENV, DEFAULT_MODEL))

    def run(description: str, seed: float, steps: float):
        if not description.strip():
            raise gr.Error("Describe the task first.")
        _, archive, report = space.generate(description.strip(), int(seed), int(steps))
        return str(archive), report

    with gr.Blocks(title="COND P-DIFF LoRA generator") as demo:
        gr.Markdown(
            f"# LoRA generator (COND P-DIFF)\nPipeline: `{space.repo_id}`, base model "
            f"`{space.lora_config.base_model_name_or_path}`. Describe a task; the pipeline generates a LoRA adapter "
            "for it (no training). Download the PEFT folder as a zip and load it with "
            "`PeftModel.from_pretrained(base, folder)`. Training tasks: "
            + ", ".join(f"`{n}`" for n in space.task_names())
            + ". Generated adapters are untested: check them on held-out data before use."
        )
        with gr.Row():
            with gr.Column():
                description = gr.Textbox(
                    "Decide whether a quotation is about computers (first class) or about food (second class).",
                    label="Task description",
                    lines=3,
                )
                seed = gr.Number(0, label="Seed", precision=0)
                steps = gr.Slider(5, 200, value=50, step=5, label="DDIM steps")
                button = gr.Button("Generate adapter", variant="primary")
            with gr.Column():
                archive = gr.File(label="Generated PEFT adapter (zip)")
                report = gr.JSON(label="Report")
        gr.Examples(
            [
                ["Decide whether a quotation is about science (first class) or about sports (second class)."],
                ["Decide whether a quotation is about love (first class) or about politics (second class)."],
            ],
            inputs=[description],
        )
        button.click(run, [description, seed, steps], [archive, report])
    return demo


if __name__ == "__main__":
    spaces.launch(build_demo())
