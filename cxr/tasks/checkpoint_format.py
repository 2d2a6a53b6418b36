"""Where a ``cxr-train`` checkpoint keeps its own description, shared by the writer
(:class:`cxr.tasks.callbacks.metadata.CheckpointMetadata`) and the reader
(:func:`cxr.inference.checkpoint.load_model`, which must not import Lightning)."""

META_KEY = "cxr"  # checkpoint[META_KEY]: model name and arguments, datamodule, task
# 2: model_kwargs hold every constructor argument; 1: the config's keys only (see LEGACY_DEFAULTS)
FORMAT_VERSION = 2
