"""Which epoch of a fit is its best: the monitored objective first, the validation loss next.

On a small validation set an accuracy moves in steps of one row (38 rows: 2.6 points), so
several epochs often tie on it while the validation loss still falls. Keras' EarlyStopping and
ModelCheckpoint count a tie as no improvement: they keep the first epoch that reached the best
accuracy and stop `patience` epochs later, however much the model went on improving. Here a tie
on the objective goes to the epoch with the lower validation loss.
"""

from __future__ import annotations

import math
from typing import Any

TIE_BREAK = "val_loss"


def score(logs: dict, monitor: str) -> tuple[float, float] | None:
    """An epoch's (objective, validation loss) from its logs; None without the objective."""
    value = logs.get(monitor)
    if value is None or math.isnan(float(value)):
        return None
    loss = logs.get(TIE_BREAK)
    return float(value), math.inf if loss is None else float(loss)


def better(candidate: tuple[float, float], best: tuple[float, float], mode: str) -> bool:
    """Whether `candidate` beats `best`: a better objective, or the same and a lower loss."""
    if candidate[0] != best[0]:
        return candidate[0] > best[0] if mode == "max" else candidate[0] < best[0]
    return candidate[1] < best[1]


def best_of(history: dict, monitor: str, mode: str) -> tuple[int, tuple[float, float] | None]:
    """The 1-based best epoch of a history and its score ((1, None) when nothing was
    monitored)."""
    best_epoch, best = 1, None
    for i, value in enumerate(history.get(monitor, [])):
        current = score({monitor: value, TIE_BREAK: _at(history.get(TIE_BREAK), i)}, monitor)
        if current is not None and (best is None or better(current, best, mode)):
            best_epoch, best = i + 1, current
    return best_epoch, best


def _at(values: list | None, i: int) -> float | None:
    return values[i] if values is not None and i < len(values) else None


def callback(monitor: str, mode: str, patience: int) -> Any:
    """Early stopping that restores the best epoch's weights when the fit ends, by `better`.

    Its `best_epoch` (1-based; 0 before any epoch was scored) says which epoch that was.
    """
    import keras

    class KeepBest(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.best: tuple[float, float] | None = None
            self.best_epoch, self.best_weights, self.wait = 0, None, 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            current = score(logs or {}, monitor)
            if current is None:
                return
            if self.best is None or better(current, self.best, mode):
                self.best, self.best_epoch, self.wait = current, epoch + 1, 0
                self.best_weights = self.model.get_weights()
                return
            self.wait += 1
            if self.wait >= patience:
                self.model.stop_training = True

        def on_train_end(self, logs: dict | None = None) -> None:
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return KeepBest()
