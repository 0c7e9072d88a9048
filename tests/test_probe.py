"""The bundled probe dataset (ablations.training.probe_dataset) and its recipe."""
import numpy as np
import torch

from ablations.spec.config import RunConfig, with_overrides
from ablations.spec.recipe import load_recipe, resolve
from ablations.training import probe_dataset as probe
from ablations.training.loaders import (
    SPLIT_SEED,
    build_datasets,
    check_dataset,
    load_digits_arrays,
    resolve_data_root,
    stratified_split,
)
from rest_knobs import inert_attention


def arrays():
    images, labels = load_digits_arrays()
    train_idx, val_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    return images, labels, train_idx, val_idx, probe.probe_arrays(images, labels, train_idx, val_idx)


def cells(canvas: np.ndarray, k: int = 3) -> list[np.ndarray]:
    return [canvas[8 * r:8 * r + 8, 8 * c:8 * c + 8] for r in range(k) for c in range(k)]


def test_probe_label_is_the_centre_digit_among_nine_classes():
    images, labels, train_idx, val_idx, (train_x, train_y, val_x, val_y) = arrays()
    assert probe.DESIGN == "3x3-center-distinct"
    assert train_x.shape == (probe.TRAIN_SIZE, 24, 24) and val_x.shape == (probe.VAL_SIZE, 24, 24)
    for split_x, split_y, idx in ((train_x, train_y, train_idx), (val_x, val_y, val_idx)):
        lookup = {images[i].tobytes(): labels[i] for i in idx}  # only this split's digit images
        for canvas, label in zip(split_x[:200], split_y[:200], strict=True):
            classes = [lookup[cell.tobytes()] for cell in cells(canvas)]  # KeyError: a digit of the other split
            assert classes[4] == label  # the centre cell
            assert len(set(classes)) == 9
    # every training digit is the target once: the labels are balanced as the digits are
    assert np.array_equal(np.bincount(train_y), np.bincount(labels[train_idx]))


def test_probe_is_fixed_and_bundled():
    config = with_overrides(RunConfig(), {"data.dataset": "probe", "data.img_size": 32})
    assert resolve_data_root(config) is None
    check_dataset(config)  # needs no folder
    train, val, num_classes = build_datasets(config)
    assert (len(train), len(val), num_classes) == (probe.TRAIN_SIZE, probe.VAL_SIZE, 10)
    x, y = val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= int(y) < 10
    _, val_other, _ = build_datasets(with_overrides(config, {"train.seed": 7}))
    assert all(torch.equal(val[i][0], val_other[i][0]) for i in range(0, len(val), 100))
    # the same draw on every call (PROBE_SEED), and a different one with another seed
    images, labels, train_idx, val_idx, first = arrays()
    again = probe.probe_arrays(images, labels, train_idx, val_idx)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = probe.probe_arrays(images, labels, train_idx, val_idx, seed=probe.PROBE_SEED + 1)
    assert not np.array_equal(first[0], other[0])


def test_every_design_builds():
    images, labels, train_idx, val_idx, _ = arrays()
    for design, ((rows, cols), _, _, margin) in probe.DESIGNS.items():
        train_x, train_y, val_x, val_y = probe.probe_arrays(images, labels, train_idx, val_idx, design=design,
                                                            train_size=20, val_size=10)
        side = 8 * max(rows, cols) + margin
        assert train_x.shape == (20, side, side) and val_x.shape == (10, side, side)
        assert train_y.min() >= 0 and train_y.max() < probe.NUM_CLASSES


def test_probe_recipe():
    recipe = load_recipe("probe")
    assert "docs/probe.md" in recipe.source
    config = resolve(recipe)
    assert config.data.dataset == "probe" and config.data.root is None
    # nothing that moves or hides a cell: no crops, flips or erasing
    assert (config.aug.scale_min, config.aug.hflip, config.aug.reprob) == (1.0, 0.0, 0.0)
    assert config.aug.mixup == 0 and config.aug.cutmix == 0 and config.aug.rand_augment is None
    assert config.data.img_size == 64 and not inert_attention(64)  # 2x2 key maps: attention is alive
