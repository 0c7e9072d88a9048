"""Where runs run: RunJob (the one path that claims, trains and records a run), the local executor, SLURM."""
