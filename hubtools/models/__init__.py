"""transformers model families defined by hubtools (``be_dinov2``, ...), one sub-package per family."""
