"""p-diff and COND P-DIFF: diffusers pipelines that generate network parameters and LoRA adapters.

hubtools' ``PDiffPipeline.from_pretrained`` / ``CondPDiffPipeline.from_pretrained`` load saved folders
(the self-contained layout and the older one) with hubtools' own classes; without hubtools,
``DiffusionPipeline.from_pretrained(path, trust_remote_code=True)`` loads the code the folder carries.
"""

from hubtools.paramgen.collect import CheckpointSet, collect_checkpoints, stack_checkpoints
from hubtools.paramgen.models import (
    ConditionEncoder,
    CondParamDenoiser,
    ParamAutoencoder,
    ParamDenoiser,
    ParamNormalizer,
)
from hubtools.paramgen.pipelines import (
    CondPDiffPipeline,
    ParamGenOutput,
    PDiffPipeline,
    ddim_copy,
    embed_texts,
)
from hubtools.paramgen.spec import ParamSpec, ParamSpecError
from hubtools.paramgen.training import PDiffTrainConfig, train_cond_pdiff, train_pdiff

__all__ = [
    "CheckpointSet",
    "CondPDiffPipeline",
    "CondParamDenoiser",
    "ConditionEncoder",
    "PDiffPipeline",
    "PDiffTrainConfig",
    "ParamAutoencoder",
    "ParamDenoiser",
    "ParamGenOutput",
    "ParamNormalizer",
    "ParamSpec",
    "ParamSpecError",
    "collect_checkpoints",
    "ddim_copy",
    "embed_texts",
    "stack_checkpoints",
    "train_cond_pdiff",
    "train_pdiff",
]
