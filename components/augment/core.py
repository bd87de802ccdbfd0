"""Augment: seeded extra training rows made from the train split only.

Images get small random rotations and shifts (and horizontal flips when asked: a flipped digit
is another digit, so flips are off by default). Tables get gaussian noise on numeric columns,
scaled to each column's spread. Validation and test splits are never touched.
"""

from __future__ import annotations

import numpy as np

from kerasflow import bundle, stepio, tracking
from kerasflow import constants as C

STEP = "augment"


def augment_images(
    x: np.ndarray,
    y: np.ndarray,
    factor: int,
    seed: int,
    rotation: float = 12.0,
    shift: float = 0.1,
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the originals followed by `factor` randomly transformed copies of each image."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    h, w = x.shape[1:3]
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    copies = [x]
    for _ in range(factor):
        out = np.empty_like(x)
        angles = np.deg2rad(rng.uniform(-rotation, rotation, len(x)))
        shifts = rng.uniform(-shift, shift, (len(x), 2)) * np.array([h, w])
        flips = rng.random(len(x)) < 0.5 if flip else np.zeros(len(x), bool)
        for i in range(len(x)):
            c, s = np.cos(angles[i]), np.sin(angles[i])
            matrix = np.array([[c, -s], [s, c]])
            if flips[i]:
                matrix = matrix @ np.diag([1.0, -1.0])
            offset = centre - matrix @ (centre + shifts[i])
            for ch in range(x.shape[3]):
                out[i, :, :, ch] = ndimage.affine_transform(
                    x[i, :, :, ch], matrix, offset=offset, order=1, mode="constant", cval=0.0
                )
        copies.append(out)
    return np.concatenate(copies), np.concatenate([y] * (factor + 1))


def augment_table(frame, meta: dict, factor: int, seed: int, noise: float = 0.05):
    """Returns the rows followed by `factor` copies with gaussian noise on numeric columns."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = [f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "numeric"]
    stds = frame[numeric].std(ddof=0).to_numpy()
    copies = [frame]
    for _ in range(factor):
        noisy = frame.copy()
        noisy[numeric] = frame[numeric].to_numpy() + rng.normal(
            0.0, 1.0, (len(frame), len(numeric))
        ) * (noise * stds)
        copies.append(noisy)
    return pd.concat(copies, ignore_index=True)


def augment_part(meta: dict, train: bundle.Part, factor: int, seed: int, flip: bool) -> bundle.Part:
    """Augments one train part according to its modality."""
    if factor == 0:
        return train
    if train.frame is None:
        x, y = augment_images(train.x, train.y, factor, seed, flip=flip)
        return bundle.Part(x=x, y=y)
    return bundle.Part(frame=augment_table(train.frame, meta, factor, seed))


@stepio.step_entry(STEP)
def run(
    splits_dir: str,
    out_dir: str,
    factor: int,
    seed: int,
    flip: bool,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: writes a bundle whose `train` part holds the augmented train split."""
    with tracking.step_run(tracking_uri, parent_run_id, STEP):
        meta = bundle.load_meta(splits_dir)
        train = bundle.load_part(splits_dir, "train")
        result = augment_part(meta, train, int(factor), int(seed), bool(flip))
        bundle.save(out_dir, bundle.Bundle(meta=meta, parts={"train": result}))
        tracking.log_params(
            {
                "augment_factor": int(factor),
                "seed": int(seed),
                "flip": flip,
                "modality": meta[C.META_MODALITY],
            }
        )
        import mlflow

        mlflow.log_metrics({"train_rows_in": len(train), "train_rows_out": len(result)})
        stepio.progress(STEP, f"train rows {len(train)} -> {len(result)}")
