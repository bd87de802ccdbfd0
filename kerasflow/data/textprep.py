"""Text preprocessing fitted without TensorFlow: tokens, vocabulary and sequence length.

The vocabulary is computed here, in plain Python, on the train split, and handed to a Keras
`TextVectorization` layer inside the model. That layer standardizes with
`kerasflow.modeling.layers.standardize_text`, built from the patterns below, so the tokens
counted here are the tokens the served model sees: lowercase over all of Unicode (Keras' own
default lowercases ASCII only, which would make 'École' unknown to the served model), ASCII
punctuation removed, Unicode spaces made plain spaces, then a split on whitespace.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Written so that Python's `re` and TensorFlow's RE2 read each pattern the same way.
# The ASCII punctuation Keras' `lower_and_strip_punctuation` removes.
PUNCTUATION_PATTERN = r"[!\"#$%&()\*\+,\-\./:;<=>?@\[\\\]^_`{|}~']"
# The spaces `str.split` splits on and `tf.strings.split` (ASCII whitespace only) does not:
# no-break and typographic spaces, line and paragraph separators. Both sides make them ' '.
# The pattern holds the characters themselves (Python string escapes), not regex escapes.
UNICODE_SPACE_PATTERN = "[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_PUNCTUATION = re.compile(PUNCTUATION_PATTERN)
_UNICODE_SPACE = re.compile(UNICODE_SPACE_PATTERN)
MAX_TOKENS = 20000
MAX_SEQUENCE_LENGTH = 256
SEQUENCE_PERCENTILE = 95


def standardize(text: str) -> str:
    """`text` lowercased (all of Unicode), without ASCII punctuation, with plain spaces only."""
    return _UNICODE_SPACE.sub(" ", _PUNCTUATION.sub("", str(text).lower()))


def tokenize(text: str) -> list[str]:
    """Standardized words, as the model's TextVectorization layer splits them."""
    return standardize(text).split()


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
