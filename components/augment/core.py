"""Augment: seeded extra training rows made from the train split only.

Images: flips, rotations, zooms, translations (one affine transform per copy), contrast and
gaussian noise; flips are off by default (a flipped digit is another digit). Tables: gaussian
noise on numeric columns, SMOTE neighbours or within-class mixup, one method per copy in turn.
Text: random deletion, swap and insertion of words and synonym replacement from a word map the
user provides, one operation per copy. With `imbalance` 'smote' (set in the split step) the
classes are first oversampled to the majority's size. Validation and test splits are never
touched. The step logs its configuration and a preview: a grid of images before and after, or
a before/after summary of tables and text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts, choices
from kerasflow.runtime import boundary
from kerasflow.runtime.errors import UserError
from kerasflow.settings import AugmentSettings
from kerasflow.tracking import runs

STEP = "augment"
PREVIEW_IMAGES = 8
PREVIEW_TEXTS = 6
WORD_CHANGE_SHARE = 0.1
# Pixel values an augmentation block works on at once (float64 temporaries of 8 MB).
BLOCK_VALUES = 1 << 20


@dataclass
class ImageStrength:
    """How far each image transform may go."""

    rotation: float = 12.0  # degrees
    zoom: float = 0.1  # +- share of the size
    translation: float = 0.1  # +- share of the size
    contrast: float = 0.2  # +- factor around each image's mean
    noise: float = 0.03  # standard deviation as a share of the pixel range


@dataclass
class AugmentSummary:
    """What the step did, for MLflow."""

    methods: tuple[str, ...] = ()
    rows_in: int = 0
    rows_out: int = 0
    oversampled: int = 0
    notes: list[str] = field(default_factory=list)


def _affine(rng, n: int, h: int, w: int, methods, s: ImageStrength) -> list[np.ndarray]:
    """One 2x2 matrix (output -> input coordinates) and shift per image."""
    angles = np.deg2rad(rng.uniform(-s.rotation, s.rotation, n)) if "rotation" in methods else 0
    angles = np.broadcast_to(angles, (n,))
    zooms = rng.uniform(1 - s.zoom, 1 + s.zoom, n) if "zoom" in methods else np.ones(n)
    shifts = (
        rng.uniform(-s.translation, s.translation, (n, 2)) * np.array([h, w])
        if "translation" in methods
        else np.zeros((n, 2))
    )
    flips = rng.random(n) < 0.5 if "flip" in methods else np.zeros(n, bool)
    out = []
    for i in range(n):
        c, si = np.cos(angles[i]), np.sin(angles[i])
        matrix = np.array([[c, -si], [si, c]]) / zooms[i]
        if flips[i]:
            matrix = matrix @ np.diag([1.0, -1.0])
        out.append((matrix, shifts[i]))
    return out


def augment_images(
    x: np.ndarray,
    y: np.ndarray,
    factor: int,
    seed: int,
    methods: tuple[str, ...] = choices.DEFAULT_AUGMENT_METHODS["image"],
    strength: ImageStrength | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the originals followed by `factor` randomly transformed copies of each image.

    Pixel values stay within the range of the originals.
    """
    from scipy import ndimage

    s = strength or ImageStrength()
    rng = np.random.default_rng(seed)
    n, h, w, channels = x.shape
    low, high = float(x.min()), float(x.max())
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    geometric = {"flip", "rotation", "zoom", "translation"} & set(methods)
    # One output array filled in place, the pixel arithmetic a block of images at a time: a
    # list of copies joined at the end, with float64 noise for a whole copy, took several
    # times the output's memory.
    result = np.empty(((factor + 1) * n, h, w, channels), dtype="float32")
    result[:n] = x
    step = max(1, BLOCK_VALUES // max(1, h * w * channels))
    for copy in range(1, factor + 1):
        out = result[copy * n : (copy + 1) * n]
        out[...] = x
        if geometric:
            for i, (matrix, shift) in enumerate(_affine(rng, n, h, w, methods, s)):
                offset = centre - matrix @ (centre + shift)
                for ch in range(channels):
                    out[i, :, :, ch] = ndimage.affine_transform(
                        x[i, :, :, ch], matrix, offset=offset, order=1, mode="constant", cval=low
                    )
        factors = None
        if "contrast" in methods:
            factors = rng.uniform(1 - s.contrast, 1 + s.contrast, (n, 1, 1, 1))
        for start in range(0, n, step):
            block: np.ndarray = out[start : start + step]
            if factors is not None:
                mean = block.mean(axis=(1, 2), keepdims=True)
                block = (block - mean) * factors[start : start + step] + mean
            if "noise" in methods:
                block = block + rng.normal(0.0, s.noise * (high - low), block.shape)
            out[start : start + step] = np.clip(block, low, high)
    return result, np.concatenate([y] * (factor + 1))


def _numeric(meta: dict) -> list[str]:
    return [f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "numeric"]


def _categorical(meta: dict) -> list[str]:
    return [f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "categorical"]


def noise_copy(frame, meta: dict, rng, noise: float = 0.05):
    """A copy of the rows with gaussian noise on numeric columns, scaled to each column's spread."""
    numeric = _numeric(meta)
    noisy = frame.copy(deep=False)  # columns are replaced, a column at a time, never written into
    if numeric:
        stds = frame[numeric].std(ddof=0).to_numpy()
        draws = rng.normal(0.0, 1.0, (len(frame), len(numeric)))
        for j, col in enumerate(numeric):
            noisy[col] = frame[col].to_numpy() + draws[:, j] * (noise * stds[j])
    return noisy


def mixup_copy(frame, meta: dict, rng, alpha: float = 0.4):
    """A copy where each row is mixed with a partner: numeric columns interpolated, categories
    and (for classification) the label taken from the row itself.

    Partners come from the same class, so hard labels stay right; for regression the label is
    interpolated too. The mixing weight of the row is at least one half.
    """
    label = meta[C.META_LABEL]
    numeric = _numeric(meta) + ([label] if meta[C.META_TASK] == "regression" else [])
    partner = np.arange(len(frame))
    if meta[C.META_TASK] == "classification":
        y = frame[label].to_numpy()
        for cls in np.unique(y):
            rows = np.flatnonzero(y == cls)
            partner[rows] = rng.permutation(rows)
    else:
        partner = rng.permutation(len(frame))
    lam = rng.beta(alpha, alpha, len(frame))
    lam = np.maximum(lam, 1 - lam)[:, None]
    mixed = frame.copy(deep=False)
    for col in numeric:
        a = frame[col].to_numpy(dtype="float64")
        mixed[col] = lam[:, 0] * a + (1 - lam[:, 0]) * a[partner]
    return mixed


def _smote(frame, meta: dict, seed: int, strategy: Any):
    """Rows SMOTE adds to reach `strategy` (a dict of class -> target count, or a name)."""
    from imblearn.over_sampling import SMOTE, SMOTEN, SMOTENC, RandomOverSampler

    label = meta[C.META_LABEL]
    features = [f["name"] for f in meta[C.META_FEATURES]]
    categorical = _categorical(meta)
    counts = frame[label].value_counts()
    k = int(min(5, counts.min() - 1))
    if k < 1:
        sampler = RandomOverSampler(sampling_strategy=strategy, random_state=seed)
    elif categorical and len(categorical) == len(features):
        sampler = SMOTEN(sampling_strategy=strategy, random_state=seed, k_neighbors=k)
    elif categorical:
        sampler = SMOTENC(categorical, sampling_strategy=strategy, random_state=seed, k_neighbors=k)
    else:
        sampler = SMOTE(sampling_strategy=strategy, random_state=seed, k_neighbors=k)
    xs, ys = sampler.fit_resample(frame[features], frame[label])
    # imbalanced-learn appends the new rows after the originals.
    added = xs.iloc[len(frame) :].copy()
    added[label] = ys.iloc[len(frame) :].to_numpy()
    return added[frame.columns].reset_index(drop=True)


def smote_copy(frame, meta: dict, seed: int):
    """As many SMOTE rows as there are rows, in the same class proportions."""
    counts = frame[meta[C.META_LABEL]].value_counts()
    return _smote(frame, meta, seed, {c: 2 * int(n) for c, n in counts.items()})


def augment_table(frame, meta: dict, factor: int, seed: int, methods=("noise",)):
    """Returns the rows followed by `factor` augmented copies, one method per copy in turn.

    SMOTE and within-class mixup need classes: for regression they fall back to noise
    (mixup interpolates the label instead).
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    copies = [frame]
    for i in range(factor):
        method = methods[i % len(methods)]
        if method == "smote" and meta[C.META_TASK] == "classification":
            copies.append(smote_copy(frame, meta, seed + i))
        elif method == "mixup":
            copies.append(mixup_copy(frame, meta, rng))
        else:
            copies.append(noise_copy(frame, meta, rng))
    return pd.concat(copies, ignore_index=True)


def load_synonyms(uri: str) -> dict[str, list[str]]:
    """Reads a word map (JSON or YAML: word -> synonym or list of synonyms), keys lowercased.

    Raises:
        UserError: when the file is missing, unreadable or not a mapping of words.
    """
    import yaml

    from kerasflow.runtime.fileio import local_copy

    try:
        with local_copy(uri) as path:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UserError:
        raise UserError(f"synonyms file not found: {uri}") from None
    except (yaml.YAMLError, UnicodeDecodeError, IsADirectoryError):
        raise UserError(f"synonyms file {uri} is not valid JSON or YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"synonyms file {uri} must map words to synonyms")
    out: dict[str, list[str]] = {}
    for word, values in data.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UserError(f"synonyms of '{word}' in {uri} must be a word or a list of words")
        if values:
            out[str(word).lower()] = list(values)
    return out


def _word_key(word: str) -> str:
    return word.lower().strip(string.punctuation)


def edit_text(
    text: str, method: str, rng, synonyms: dict[str, list[str]], share: float = WORD_CHANGE_SHARE
) -> str:
    """One EDA-style edit of a text: deletion, swap, insertion or synonym replacement."""
    words = text.split()
    if len(words) < 2 and method in ("deletion", "swap"):
        return text
    n = max(1, int(round(share * len(words))))
    if method == "deletion":
        keep = rng.random(len(words)) >= share
        if not keep.any():
            keep[rng.integers(len(words))] = True
        return " ".join(w for w, k in zip(words, keep, strict=True) if k)
    if method == "swap":
        for _ in range(n):
            i, j = rng.choice(len(words), 2, replace=False)
            words[i], words[j] = words[j], words[i]
        return " ".join(words)
    known = [i for i, w in enumerate(words) if _word_key(w) in synonyms]
    if method == "synonym":
        for i in rng.permutation(known)[:n]:
            options = synonyms[_word_key(words[i])]
            words[i] = options[rng.integers(len(options))]
        return " ".join(words)
    if method == "insertion":
        sources = [synonyms[_word_key(words[i])] for i in known] or [words]
        for _ in range(n):
            options = sources[rng.integers(len(sources))]
            words.insert(int(rng.integers(len(words) + 1)), options[rng.integers(len(options))])
        return " ".join(words)
    raise ValueError(f"unknown text edit {method}")


def augment_text(frame, meta: dict, factor: int, seed: int, methods, synonyms=None):
    """Returns the rows followed by `factor` copies, each row edited by one random method."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    column = next(f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "text")
    synonyms = synonyms or {}
    usable = [m for m in methods if m != "synonym" or synonyms]
    if not usable:
        return frame
    copies = [frame]
    for _ in range(factor):
        copy = frame.copy()
        picks = rng.integers(len(usable), size=len(frame))
        copy[column] = [
            edit_text(t, usable[p], rng, synonyms)
            for t, p in zip(frame[column].astype(str), picks, strict=True)
        ]
        copies.append(copy)
    return pd.concat(copies, ignore_index=True)


def oversample(meta: dict, train: artifacts.Part, seed: int) -> artifacts.Part:
    """Balances the classes of the train split: SMOTE for tables and images, repeats for text."""
    if train.frame is None:
        from imblearn.over_sampling import SMOTE, RandomOverSampler

        counts = np.bincount(train.y.astype(int))
        k = int(min(5, counts[counts > 0].min() - 1))
        sampler = (
            SMOTE(random_state=seed, k_neighbors=k)
            if k >= 1
            else RandomOverSampler(random_state=seed)
        )
        flat, y = sampler.fit_resample(train.x.reshape(len(train.x), -1), train.y)
        return artifacts.Part(x=flat.reshape(-1, *train.x.shape[1:]).astype("float32"), y=y)
    import pandas as pd

    if meta[C.META_MODALITY] == "text":
        from imblearn.over_sampling import RandomOverSampler

        label = meta[C.META_LABEL]
        sampler = RandomOverSampler(random_state=seed)
        xs, ys = sampler.fit_resample(train.frame.drop(columns=[label]), train.frame[label])
        return artifacts.Part(frame=xs.assign(**{label: ys.to_numpy()})[train.frame.columns])
    added = _smote(train.frame, meta, seed, "not majority")
    return artifacts.Part(frame=pd.concat([train.frame, added], ignore_index=True))


def augment_part(
    meta: dict,
    train: artifacts.Part,
    settings: AugmentSettings,
    *,
    synonyms: dict[str, list[str]] | None = None,
    summary: AugmentSummary | None = None,
) -> artifacts.Part:
    """Augments one train part according to its modality (and balances it first on request)."""
    factor, seed = settings.augment_factor, settings.seed
    summary = summary if summary is not None else AugmentSummary()
    modality = meta[C.META_MODALITY]
    chosen = choices.resolve_methods(settings.augment_methods, modality, settings.augment_flip)
    summary.methods, summary.rows_in = chosen, len(train)
    if meta.get("imbalance") == "smote" and meta[C.META_TASK] == "classification":
        before = len(train)
        train = oversample(meta, train, seed)
        summary.oversampled = len(train) - before
    if factor > 0 and chosen:
        if train.frame is None:
            x, y = augment_images(train.x, train.y, factor, seed, chosen)
            train = artifacts.Part(x=x, y=y)
        elif modality == "text":
            if "synonym" in chosen and not synonyms:
                summary.notes.append("synonym replacement skipped: no synonyms file given")
            frame = augment_text(train.frame, meta, factor, seed, chosen, synonyms)
            train = artifacts.Part(frame=frame)
        else:
            if meta[C.META_TASK] == "regression" and "smote" in chosen:
                summary.notes.append("SMOTE needs classes: regression copies use noise instead")
            train = artifacts.Part(frame=augment_table(train.frame, meta, factor, seed, chosen))
    summary.rows_out = len(train)
    return train


def image_preview(x: np.ndarray, factor: int) -> Any:
    """A grid: the first originals on top, their augmented copies below.

    `x` holds the originals followed by `factor` copies of them, in the same order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasflow.data.profile import _displayable

    n_in = len(x) // (factor + 1)
    cols = min(PREVIEW_IMAGES, n_in)
    rows = 1 + min(factor, 3)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            img = x[r * n_in + c]
            axes[r][c].imshow(_displayable(img), cmap="gray")
            axes[r][c].axis("off")
        axes[r][0].set_title("original" if r == 0 else f"copy {r}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def table_summary(meta: dict, before, after) -> str:
    """Markdown: rows per class and numeric means/stds before and after augmentation."""
    lines = [f"# Augmentation of the train split: {len(before)} -> {len(after)} rows", ""]
    label = meta[C.META_LABEL]
    if meta[C.META_TASK] == "classification":
        names = meta[C.META_CLASS_NAMES]
        b = before[label].value_counts().sort_index()
        a = after[label].value_counts().sort_index()
        lines += ["| class | before | after |", "| --- | --- | --- |"]
        lines += [f"| {names[int(c)]} | {b.get(c, 0)} | {a.get(c, 0)} |" for c in a.index]
        lines.append("")
    numeric = _numeric(meta)[:30]
    if numeric:
        lines += ["| column | mean before | mean after | std before | std after |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for col in numeric:
            lines.append(
                f"| {col} | {before[col].mean():.4g} | {after[col].mean():.4g} | "
                f"{before[col].std():.4g} | {after[col].std():.4g} |"
            )
    text = [f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "text"]
    if text and len(after) > len(before):
        lines += ["", "| original | augmented |", "| --- | --- |"]
        for i in range(min(PREVIEW_TEXTS, len(before))):
            pair = (before[text[0]].iloc[i], after[text[0]].iloc[len(before) + i])
            lines.append("| " + " | ".join(_cell(t) for t in pair) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@boundary.step_entry(STEP)
def run(
    *,
    settings: AugmentSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    splits_dir: str,
    out_dir: str,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: writes a bundle whose `train` part holds the augmented train split.

    Args:
        settings: The step's settings (a mapping is validated into AugmentSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        splits_dir: The splits from normalize_split.
        out_dir: Output folder of the augmented train split.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
    """
    opts = AugmentSettings.from_parameters(settings, headline)
    factor, synonyms = opts.augment_factor, opts.synonyms
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts):
        meta = artifacts.load_meta(splits_dir)
        train = artifacts.load_part(splits_dir, "train")
        words = load_synonyms(synonyms) if synonyms else None
        summary = AugmentSummary()
        result = augment_part(meta, train, opts, synonyms=words, summary=summary)
        artifacts.save(out_dir, artifacts.Bundle(meta=meta, parts={"train": result}))
        config = {
            "augment_factor": factor,
            "seed": opts.seed,
            "augment_methods": ",".join(summary.methods),
            "synonyms": synonyms,
            "synonym_entries": len(words or {}),
            "imbalance": meta.get("imbalance", "none"),
            "modality": meta[C.META_MODALITY],
        }
        runs.log_params(config)
        runs.log_dict_artifact({**config, "notes": summary.notes}, "augment_config.json")
        import mlflow

        mlflow.log_metrics(
            {
                "train_rows_in": summary.rows_in,
                "train_rows_out": summary.rows_out,
                "oversampled_rows": summary.oversampled,
            }
        )
        if result.frame is None:
            if factor > 0:
                fig = image_preview(result.x, factor)
                runs.log_figure(fig, "augment_preview.png")
        else:
            runs.log_text_artifact(
                table_summary(meta, train.frame, result.frame), "augment_summary.md"
            )
        for note in summary.notes:
            boundary.progress(STEP, f"note: {note}")
        boundary.progress(
            STEP,
            f"train rows {summary.rows_in} -> {summary.rows_out} "
            f"({', '.join(summary.methods) or 'no methods'}, x{factor})",
        )
