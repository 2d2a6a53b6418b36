"""Datamodules, readers, caches and transforms. Imports are explicit: ``from cxr.data.rsna import ...``."""
