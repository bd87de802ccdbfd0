"""The vocabulary of the data steps' options: policy names, augmentation methods, image sizes.

Settings validation and the steps both read these, so an option is spelled in one place. This
module imports nothing heavy: the CLI checks options before any step starts.
"""

from __future__ import annotations

from kerasflow.runtime.errors import UserError

MISSING_POLICIES = ("drop", "mean", "median", "most_frequent", "constant", "knn")
OUTLIER_METHODS = ("iqr", "zscore", "none")
OUTLIER_ACTIONS = ("clip", "drop", "keep")
SCALINGS = ("zscore", "minmax")
IMBALANCE_POLICIES = ("class_weights", "smote", "none")

AUGMENT_METHODS = {
    "image": ("flip", "rotation", "zoom", "translation", "contrast", "noise"),
    "tabular": ("noise", "smote", "mixup"),
    "text": ("deletion", "swap", "insertion", "synonym"),
}
DEFAULT_AUGMENT_METHODS = {
    "image": ("rotation", "zoom", "translation"),
    "tabular": ("noise",),
    "text": ("deletion", "swap", "insertion"),
}

MAX_IMAGE_SIDE = 1024


def parse_image_size(text: str) -> tuple[int, int] | None:
    """Parses `"HxW"` or `"N"` (square) into (height, width); an empty string means inferred.

    Raises:
        UserError: when the text is not a size or a side is out of range.
    """
    text = str(text).strip().lower()
    if not text:
        return None
    parts = text.replace("*", "x").split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"image size '{text}' must be N or HxW, e.g. 64 or 48x64") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or not all(1 <= s <= MAX_IMAGE_SIDE for s in sides):
        raise UserError(f"image size '{text}' must be N or HxW with sides 1..{MAX_IMAGE_SIDE}")
    return sides[0], sides[1]


def parse_methods(text: str) -> tuple[str, ...]:
    """Splits a comma-separated list of augmentation methods (empty: the modality's default)."""
    return tuple(m.strip().lower() for m in str(text).split(",") if m.strip())


def check_methods(methods: tuple[str, ...], modality: str = "") -> None:
    """Checks that every method exists (for `modality`, when given).

    Raises:
        UserError: naming the first unknown method and the choices.
    """
    known = AUGMENT_METHODS.get(modality) or tuple(
        dict.fromkeys(m for ms in AUGMENT_METHODS.values() for m in ms)
    )
    for method in methods:
        if method not in known:
            where = f" for {modality} data" if modality else ""
            raise UserError(
                f"unknown augmentation method '{method}'{where} (choose from {', '.join(known)})"
            )


def resolve_methods(text: str, modality: str, flip: bool = False) -> tuple[str, ...]:
    """The augmentation methods to apply to data of `modality`.

    Methods named for another modality are ignored, so one config serves any data; `flip`
    (the older `augment_flip` switch) adds image flips.
    """
    asked = parse_methods(text)
    check_methods(asked)
    allowed = AUGMENT_METHODS[modality]
    methods = (
        tuple(m for m in asked if m in allowed) if asked else DEFAULT_AUGMENT_METHODS[modality]
    )
    if flip and modality == "image" and "flip" not in methods:
        methods += ("flip",)
    return methods
