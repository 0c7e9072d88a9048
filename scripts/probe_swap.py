"""Do probe-trained models read the centre cell? Evaluate them on validation mosaics whose centre digit was
swapped with the top-left one (docs/probe.md).

    python scripts/probe_swap.py results/pe      # every finished probe run the sweep's folder lists

Prints, per run: top-1 on the probe's validation set as is; on the swapped set against the original label
(the digit now in the top-left corner); and against the new centre digit. A model that reads the centre
cell follows the swap (first and third high, second near 0); one blind to position could not tell the two
sets apart (all three about the same).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import timm
import torch

import rest  # noqa: F401  (registers the models)
from ablations.spec.config import RunConfig
from ablations.training import probe_dataset as probe
from ablations.training.loaders import SPLIT_SEED, _bundled, load_digits_arrays, stratified_split
from analysis.runs import find_runs


def swapped_sets(config: RunConfig):
    """(val set as is, val set with the centre and top-left cells swapped, the swapped set's centre labels)."""
    images, labels = load_digits_arrays()
    train_idx, val_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    train_x, train_y, val_x, val_y = probe.probe_arrays(images, labels, train_idx, val_idx)
    swapped = val_x.copy()
    swapped[:, 8:16, 8:16], swapped[:, 0:8, 0:8] = val_x[:, 0:8, 0:8], val_x[:, 8:16, 8:16]
    # the top-left digit's class: look each cell up among the validation digits
    lookup = {images[i].tobytes(): labels[i] for i in val_idx}
    new_centre = np.array([lookup[c[8:16, 8:16].tobytes()] for c in swapped])
    n = len(train_y)
    sets = []
    for x in (val_x, swapped):  # normalized with the training mosaics' statistics, as in training
        all_x, all_y = np.concatenate([train_x, x]), np.concatenate([train_y, val_y])
        sets.append(_bundled(config, all_x, all_y, np.arange(n), np.arange(n, len(all_y)))[1])
    return sets[0], sets[1], torch.as_tensor(new_centre)


@torch.inference_mode()
def predict(model, ds) -> torch.Tensor:
    x = ds.images.expand(-1, 3, -1, -1)
    return torch.cat([model(x[i:i + 256]).argmax(1) for i in range(0, len(x), 256)])


def main(folder: str) -> None:
    cache = {}
    for run_dir, meta in find_runs(Path(folder)):
        if not (run_dir / "result.json").exists():
            continue
        config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text())["config"])
        if config.data.dataset != "probe":
            continue
        key = config.data.img_size
        if key not in cache:
            cache[key] = swapped_sets(config)
        plain, swapped, new_centre = cache[key]
        m = config.model
        model = timm.create_model(m.name, pos_encoding=m.pos_encoding, reduction=m.reduction, head_conv=m.head_conv,
                                  head_norm=m.head_norm, stem=m.stem, num_classes=probe.NUM_CLASSES,
                                  img_size=config.data.img_size)
        model.load_state_dict(torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"])
        model.eval()
        as_is = (predict(model, plain) == plain.labels).float().mean().item() * 100
        pred = predict(model, swapped)
        old = (pred == swapped.labels).float().mean().item() * 100
        new = (pred == new_centre).float().mean().item() * 100
        label = f"{(meta or {}).get('cell', '?')} seed {config.train.seed}"
        print(f"{label:24s} {run_dir.name:32s} as is {as_is:6.2f}   swapped: original label {old:6.2f}   "
              f"new centre {new:6.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
