"""Training one run: the trainer, its data loaders, the bundled probe dataset and experiment tracking."""
