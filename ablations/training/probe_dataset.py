"""The `probe` dataset: a task built from the bundled digits on which absolute position is needed.

A probe image is a 3x3 mosaic of nine 8x8 scikit-learn digits, of nine different classes, on a 24x24
canvas (upsampled to data.img_size like `digits`); its label is the class of the digit in the centre cell.
Every image shows nine candidate answers: a model that cannot tell where a digit is (the image as a bag of
digits is the same whichever cell holds which) is right 1 time in 9 at best; to do better it must know
which cell a feature comes from. The centre is the cell farthest from the image border.

Why this probes positional encoding. Inside ResT, self-attention and the global-average-pooled head are
blind to token order; position enters only through what breaks that symmetry: a positional encoding (LE
adds a learned per-position vector; PA and GL are 3x3 depth-wise convs whose zero padding marks the border)
and the zero padding of the stem's, the patch embeddings' and the key/value reduction's convolutions. With
pos_encoding="none" only the latter is left. docs/probe.md gives what the runs found: that is enough.

Fixed data, whatever the run seed: the digits are split as for `digits` (stratified 80/20, seed 0);
training mosaics use only training digits, validation mosaics only validation digits (no digit image is in
both). Mosaics are drawn once with PROBE_SEED; each training digit is the target of the same number of
mosaics (in a shuffled order), so the labels are balanced as the digits are. TRAIN_SIZE and VAL_SIZE
mosaics. DESIGNS keeps the other designs that were tried (docs/probe.md has their numbers).
"""
from __future__ import annotations

import numpy as np

PROBE_SEED = 12345  # the mosaics; independent of the run seed and of the digits split seed
TRAIN_SIZE = 1438  # one mosaic per training digit (1,438 training digits) as the target
VAL_SIZE = 1077  # 3 mosaics per validation digit (359 validation digits)
# name -> ((rows, columns) of digits, target cell (row, column), the other digits of classes unlike the
# target's and each other's (at most 9 others) or drawn at random, blank margin: the mosaic sits at a random
# offset of 0..margin pixels down and right on a square canvas of side max(rows, columns) * 8 + margin)
DESIGNS = {
    "2x2-tl-distinct": ((2, 2), (0, 0), True, 0),
    "2x2-tl": ((2, 2), (0, 0), False, 0),
    "3x3-center-distinct": ((3, 3), (1, 1), True, 0),
    "4x4-inner": ((4, 4), (1, 1), False, 0),
    "2x2-tl-distinct-jitter": ((2, 2), (0, 0), True, 8),
    "2x2-tl-distinct-jitter4": ((2, 2), (0, 0), True, 4),
    "1x2-left-distinct-jitter": ((1, 2), (0, 0), True, 8),
}
DESIGN = "3x3-center-distinct"  # the shipped design; docs/probe.md has the others' numbers
NUM_CLASSES = 10


def _mosaics(images: np.ndarray, labels: np.ndarray, n: int, design: str,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, side, side) canvases and (n,) labels from the digits `images` (m, 8, 8) with `labels` (m,)."""
    (kr, kc), (tr, tc), distinct, margin = DESIGNS[design]
    side = 8 * max(kr, kc) + margin
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    # the target digit: every digit the same number of times, in a shuffled order
    reps = -(-n // len(labels))
    first = rng.permutation(np.tile(np.arange(len(labels)), reps))[:n]
    cells = [(r, c) for r in range(kr) for c in range(kc) if (r, c) != (tr, tc)]
    canvas = np.zeros((n, side, side), dtype=images.dtype)
    for i, j in enumerate(first):
        dy, dx = rng.integers(side - 8 * kr + 1), rng.integers(side - 8 * kc + 1)
        mosaic = canvas[i, dy:dy + 8 * kr, dx:dx + 8 * kc]
        if distinct:
            others = rng.choice([c for c in range(10) if c != labels[j]], size=len(cells), replace=False)
        else:
            others = rng.integers(10, size=len(cells))
        mosaic[8 * tr:8 * tr + 8, 8 * tc:8 * tc + 8] = images[j]
        for (r, c), cls in zip(cells, others, strict=True):
            mosaic[8 * r:8 * r + 8, 8 * c:8 * c + 8] = images[int(rng.choice(by_class[cls]))]
    return canvas, labels[first].astype(np.int64)


def probe_arrays(images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, *,
                 design: str | None = None, train_size: int | None = None, val_size: int | None = None,
                 seed: int = PROBE_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train canvases, train labels, val canvases, val labels): square canvases in the digits' 0..16 scale."""
    design = design or DESIGN
    if design not in DESIGNS:
        raise ValueError(f"probe design {design!r}: choose one of {', '.join(DESIGNS)}")
    rng = np.random.default_rng(seed)
    train = _mosaics(images[train_idx], labels[train_idx], train_size or TRAIN_SIZE, design, rng)
    val = _mosaics(images[val_idx], labels[val_idx], val_size or VAL_SIZE, design, rng)
    return (*train, *val)
