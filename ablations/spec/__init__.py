"""What a user writes and the harness validates: run configs, sweep files, recipes, YAML, errors, metric names and
dataset checks. Nothing here imports torch."""
