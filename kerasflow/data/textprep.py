"""Text preprocessing fitted without TensorFlow: tokens, vocabulary and sequence length.

The vocabulary is computed here, in plain Python, on the train split, and handed to a Keras
`TextVectorization` layer inside the model; standardization and splitting mirror that layer's
defaults (lowercase, strip ASCII punctuation, split on whitespace), so the tokens counted here
are the tokens the served model sees.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Keras' `lower_and_strip_punctuation` removes exactly these characters.
_PUNCTUATION = re.compile(r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']")
MAX_TOKENS = 20000
MAX_SEQUENCE_LENGTH = 256
SEQUENCE_PERCENTILE = 95


def tokenize(text: str) -> list[str]:
    """Lowercased words without punctuation, as TextVectorization splits them."""
    return _PUNCTUATION.sub("", str(text).lower()).split()


def fit_vocabulary(
    texts: Iterable[str], max_tokens: int = MAX_TOKENS, min_count: int = 1
) -> tuple[list[str], int]:
    """The vocabulary (most frequent first) and a sequence length covering most texts.

    The vocabulary excludes the padding and out-of-vocabulary entries, which the layer adds.
    The sequence length is the 95th percentile of token counts, at least 8, at most 256.
    """
    import numpy as np

    counts: Counter[str] = Counter()
    lengths = []
    for text in texts:
        tokens = tokenize(text)
        counts.update(tokens)
        lengths.append(len(tokens))
    # Ties are broken alphabetically so the vocabulary does not depend on row order.
    ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
    vocabulary = ranked[: max(0, max_tokens - 2)]
    length = int(np.percentile(lengths, SEQUENCE_PERCENTILE)) if lengths else 8
    return vocabulary, int(min(MAX_SEQUENCE_LENGTH, max(8, length)))
