"""Training from a Hydra config: building the parts, the cached stages before MICA, the run, a trained run back."""
