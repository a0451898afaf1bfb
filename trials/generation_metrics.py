"""Scores of generated text against a reference: exact match and token F1 (as SQuAD scores
answers), and perplexity from a mean token loss. No extra dependency."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """Lower case, without punctuation, articles and repeated whitespace (SQuAD's normalisation)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the words the two texts share (counted with multiplicity), after :func:`normalize`.
    Two empty texts agree (1.0); one empty text scores 0.0."""
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and token F1 over pairs (0.0 for none)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references; give one each")
    count = max(len(predictions), 1)
    return {
        "val_exact_match": sum(map(exact_match, predictions, references)) / count,
        "val_token_f1": sum(map(token_f1, predictions, references)) / count,
    }


def perplexity(mean_loss: float) -> float:
    """``exp`` of the mean token cross-entropy, infinite where that overflows."""
    return math.exp(mean_loss) if mean_loss < 700 else math.inf
