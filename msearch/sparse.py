"""Keyword vectors for BM25 in Qdrant (sparse vectors with the IDF modifier).

The store multiplies by IDF; here we compute the term-frequency half of BM25 for documents
and plain term weights for queries. The tokenizer handles Chinese (and other CJK) by
character unigrams and bigrams, so a Chinese word is found without a word segmenter and
without a Chinese text model. Computed here rather than by the store so that the embedded
engine and a Qdrant server index exactly the same terms.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from functools import lru_cache

K1 = 1.2
B = 0.75
AVG_DOC_TOKENS = 120.0

_CJK = (
    r"\u3040-\u30ff"  # kana
    r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    r"\uac00-\ud7af"  # hangul
)
# A CJK run, or a run of other letters and digits (a code glued to Chinese text, as in
# "G1373次高铁", is a token of its own).
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)
_IS_CJK = re.compile(rf"[{_CJK}]")

# The commonest Chinese function characters: alone they match nearly every Chinese text (their
# bigrams still count).
_CJK_STOP = frozenset("的了和是在也就都与及或而着这那之其被把给对从向于以为个们吗呢吧啊")
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have he her his i if in into is it its "
    "of on or our she so than that the their them then there these they this to was we "
    "were what when which who will with you your".split()
)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens; CJK runs become unigrams plus bigrams."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(unicodedata.normalize("NFKC", text).lower()):
        word = match.group()
        if _IS_CJK.match(word):
            tokens.extend(c for c in word if c not in _CJK_STOP)
            tokens.extend(word[i : i + 2] for i in range(len(word) - 1))
        elif word not in _STOPWORDS:
            tokens.append(word)
    return tokens


@lru_cache(maxsize=1 << 17)  # words repeat: most of a text's tokens were hashed before
def term_id(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "little")


def _merge(weights: dict[str, float]) -> tuple[list[int], list[float]]:
    merged: dict[int, float] = {}
    for token, weight in weights.items():
        tid = term_id(token)
        merged[tid] = merged.get(tid, 0.0) + weight
    indices = sorted(merged)
    return indices, [merged[i] for i in indices]


def document_vector(text: str) -> tuple[list[int], list[float]]:
    """BM25 term-frequency weights of a document (IDF is applied by the store)."""
    tokens = tokenize(text)
    if not tokens:
        return [], []
    norm = K1 * (1 - B + B * len(tokens) / AVG_DOC_TOKENS)
    counts = Counter(tokens)
    return _merge({t: tf * (K1 + 1) / (tf + norm) for t, tf in counts.items()})


def query_vector(text: str) -> tuple[list[int], list[float]]:
    """Each distinct query term once; the store's IDF weighs them."""
    return _merge({t: 1.0 for t in set(tokenize(text))})
