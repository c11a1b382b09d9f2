"""hubtools: research systems for foundation models, packaged as Hugging Face Hub artifacts."""

__version__ = "0.1.0"
