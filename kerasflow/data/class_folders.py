"""Reading a folder with one subfolder per class: images (PNG, JPEG...) or text files.

The layout is Keras' `image_dataset_from_directory` / `text_dataset_from_directory` convention:
class names are the subfolder names, sorted. Images of mixed sizes are resized to one size (the
configured one, else the most common one) and mixed modes are converted to one channel count.
A few unreadable files among many are skipped with a warning; many end in an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasflow.runtime import progress
from kerasflow.runtime.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEXT_SUFFIXES = (".txt",)
# Above this share of unreadable files the folder is refused rather than partly read.
MAX_UNREADABLE_SHARE = 0.1
# Files read between two progress lines, as a share of the folder: a line per tenth.
FILES_PROGRESS_SHARE = 0.1
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass
class FolderData:
    """What a class folder held."""

    x: np.ndarray | None = None  # images (N, H, W, C) float32 raw pixel values
    texts: list[str] = field(default_factory=list)
    y: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0


def list_classes(root: Path) -> dict[str, list[Path]]:
    """Files of a supported kind in each class subfolder, by class name (sorted).

    Raises:
        UserError: when the folder has no class subfolders with supported files.
    """
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f
            for f in sub.rglob("*")
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + TEXT_SUFFIXES
        )
        if files:
            classes[sub.name] = files
    if not classes:
        loose = [f.name for f in root.iterdir() if f.is_file()][:3]
        hint = f" (found loose files such as {loose})" if loose else ""
        raise UserError(
            f"{root.name}/ must hold one subfolder per class with images or .txt files{hint}"
        )
    return classes


def folder_modality(classes: dict[str, list[Path]]) -> str:
    """'image' or 'text', by the majority of the files' suffixes.

    Raises:
        UserError: when images and text files are mixed half and half.
    """
    kinds = Counter(
        "image" if f.suffix.lower() in IMAGE_SUFFIXES else "text"
        for files in classes.values()
        for f in files
    )
    if kinds["image"] and kinds["text"] and min(kinds.values()) / sum(kinds.values()) > 0.1:
        raise UserError("the class folders mix images and .txt files; keep one kind of data")
    return kinds.most_common(1)[0][0]


def read_class_folder(root: Path, image_size: tuple[int, int] | None = None) -> FolderData:
    """Reads an image or text class folder.

    Raises:
        UserError: no class subfolders, too many unreadable files, nothing readable.
    """
    classes = list_classes(root)
    if folder_modality(classes) == "image":
        return _read_images(classes, image_size)
    return _read_texts(classes)


def _open_image(path: Path):
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
        return img
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _check_unreadable(bad: list[Path], total: int, kind: str) -> list[str]:
    if not bad:
        return []
    if len(bad) == total:
        raise UserError(f"none of the {total} {kind} files can be read (e.g. {bad[0].name})")
    if len(bad) > MAX_UNREADABLE_SHARE * total:
        raise UserError(
            f"{len(bad)} of {total} {kind} files cannot be read (e.g. {bad[0].parent.name}/"
            f"{bad[0].name}); more than {MAX_UNREADABLE_SHARE:.0%} is refused"
        )
    return [f"skipped {len(bad)} unreadable {kind} file(s) of {total} (e.g. {bad[0].name})"]


def _read_images(classes: dict[str, list[Path]], size: tuple[int, int] | None) -> FolderData:
    from PIL import Image

    names = list(classes)
    # Pass 1 reads headers only (cheap) to settle one size and mode; pass 2 decodes each image
    # straight into the array, so the decoded images are never all held at once.
    headers, bad = [], []
    for index, name in enumerate(names):
        for path in classes[name]:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as img:
                    headers.append((path, index, img.mode, (img.height, img.width)))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                bad.append(path)
    total = len(headers) + len(bad)
    if not headers:
        _check_unreadable(bad, total, "image")
    modes = Counter("L" if mode in GRAY_MODES else "RGB" for _, _, mode, _ in headers)
    mode = "RGB" if modes["RGB"] else "L"
    sizes = Counter(hw for _, _, _, hw in headers)
    target = size or sizes.most_common(1)[0][0]
    channels = 3 if mode == "RGB" else 1
    x = np.empty((len(headers), target[0], target[1], channels), dtype="float32")
    labels, n, resized = [], 0, 0
    shown = progress.in_current_step("files", len(headers), every=FILES_PROGRESS_SHARE)
    for path, index, _, _ in headers:
        if shown is not None:
            shown.update()
        img = _open_image(path)
        if img is None:  # a valid header over truncated or corrupt data
            bad.append(path)
            continue
        img = _to_mode(img, mode)
        if (img.height, img.width) != target:
            img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
            resized += 1
        x[n] = np.asarray(img, dtype="float32").reshape(target[0], target[1], channels)
        labels.append(index)
        n += 1
    warnings = _check_unreadable(bad, total, "image")
    if len(modes) > 1:
        warnings.append(
            f"converted {modes['L']} grayscale image(s) to RGB to match {modes['RGB']} colour ones"
        )
    if resized:
        warnings.append(
            f"resized {resized} image(s) to {target[0]}x{target[1]} ({len(sizes)} sizes found)"
        )
    return FolderData(
        x=x[:n],
        y=np.asarray(labels, dtype="int64"),
        class_names=names,
        warnings=warnings,
        files=total,
    )


def read_image_file(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """One image as training read it: converted to the model's channels, resized to its size
    (bilinear), raw pixel values as float32 of shape (height, width, channels).

    Raises:
        UserError: when the file cannot be read as an image.
    """
    from PIL import Image

    img = _open_image(path)
    if img is None:
        raise UserError(f"{path} is not an image that can be read")
    img = _to_mode(img, "RGB" if channels == 3 else "L")
    if (img.height, img.width) != (height, width):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype="float32").reshape(height, width, channels)


def _to_mode(img, mode: str):
    if img.mode == mode:
        return img
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16-bit and float images: scale into 0..255 before the 8-bit conversion clips them.
        arr = np.asarray(img, dtype="float64")
        top = arr.max() or 1.0
        from PIL import Image

        img = Image.fromarray((arr * (255.0 / top)).astype("uint8"), mode="L")
    if img.mode in ("RGBA", "LA", "P", "PA") and mode == "RGB":
        return img.convert("RGBA").convert("RGB")
    return img.convert(mode)


def read_text_file(path: Path) -> str | None:
    """A text file as one document, as training reads it (None when unreadable or binary)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    return text.strip()


def _read_texts(classes: dict[str, list[Path]]) -> FolderData:
    names = list(classes)
    texts, labels, bad = [], [], []
    listed = sum(
        1 for files in classes.values() for f in files if f.suffix.lower() in TEXT_SUFFIXES
    )
    shown = progress.in_current_step("files", listed, every=FILES_PROGRESS_SHARE)
    for index, name in enumerate(names):
        for path in classes[name]:
            if path.suffix.lower() not in TEXT_SUFFIXES:
                continue
            if shown is not None:
                shown.update()
            text = read_text_file(path)
            if text is None:
                bad.append(path)
                continue
            texts.append(text)
            labels.append(index)
    total = len(texts) + len(bad)
    warnings = _check_unreadable(bad, total, "text")
    return FolderData(
        texts=texts,
        y=np.asarray(labels, dtype="int64"),
        class_names=names,
        warnings=warnings,
        files=total,
    )
