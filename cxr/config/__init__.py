"""Config composition, validation, run identity and the sweep summary."""
