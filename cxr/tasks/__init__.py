"""LightningModules that receive a model and own its loss, metrics and optimisers."""
