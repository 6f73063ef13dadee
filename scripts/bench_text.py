"""English-like message text for the benchmarks: words drawn by their real frequency.

Tokenizing is most of what a full-text index costs, and what it costs depends on the words: a
body of one repeated letter is a single token, while chat text is many short, mostly common
words with a long tail of rare ones. ``wordfreq`` ships the frequencies of English words, so the
benchmarks draw from its 30,000 most common with those weights (seeded, so every run writes
the same text). No grammar: word counts, lengths, repetition and vocabulary are what matter to
the parser, the stemmer, the index and compression.
"""

from __future__ import annotations

import itertools
import random
from functools import cache

import wordfreq

VOCABULARY_SIZE = 30_000


@cache
def _vocabulary(exclude: frozenset[str]) -> tuple[list[str], list[float]]:
    words = [w for w in wordfreq.top_n_list("en", VOCABULARY_SIZE) if w not in exclude]
    weights = list(itertools.accumulate(wordfreq.word_frequency(w, "en") for w in words))
    return words, weights


class TextGenerator:
    """Deterministic English-like text; ``exclude`` keeps marker words out of the filler."""

    def __init__(self, seed: int = 1, exclude: frozenset[str] = frozenset()) -> None:
        self._rng = random.Random(seed)  # noqa: S311 (reproducible text, not secrets)
        self._words, self._cum = _vocabulary(exclude)

    def text(self, approx_bytes: int) -> str:
        """Words joined by spaces, about ``approx_bytes`` long (at least one word)."""
        out: list[str] = []
        size = 0
        while size < approx_bytes or not out:
            # draw in chunks: one choices() call per ~16 words is much faster than per word
            for word in self._rng.choices(self._words, cum_weights=self._cum, k=16):
                out.append(word)
                size += len(word) + 1
                if size >= approx_bytes:
                    break
        return " ".join(out)

    def randrange(self, n: int) -> int:
        return self._rng.randrange(n)
