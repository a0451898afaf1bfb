"""Seeded text perturbations: character typos for a robustness check, token dropout and swaps for training."""

from __future__ import annotations

import numpy as np


def add_typos(text: str, rate: float, rng: np.random.Generator) -> str:
    """``text`` with about ``rate`` of its letters hit by a typo: dropped, swapped with the next
    letter, or doubled (the kinds of noise people type)."""
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if char.isalpha() and rng.random() < rate:
            kind = rng.integers(3)
            if kind == 0:  # dropped
                i += 1
                continue
            if kind == 1 and i + 1 < len(chars):  # swapped with the next
                out.extend([chars[i + 1], char])
                i += 2
                continue
            out.extend([char, char])  # doubled
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def noisy_copies(texts, rate: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [add_typos(str(text), rate, rng) for text in texts]


def drop_and_swap_tokens(ids: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """Training augmentation on token ids: drop each inner token with probability ``prob`` and,
    with probability ``prob``, swap two neighbouring inner tokens. The first and last tokens
    (CLS/SEP and the like) stay."""
    if prob <= 0 or len(ids) <= 3:
        return ids
    inner = ids[1:-1]
    kept = inner[rng.random(len(inner)) >= prob]
    if len(kept) == 0:
        kept = inner[:1]
    if len(kept) > 1 and rng.random() < prob:
        position = int(rng.integers(len(kept) - 1))
        kept = kept.copy()
        kept[position], kept[position + 1] = kept[position + 1], kept[position]
    return np.concatenate([ids[:1], kept, ids[-1:]])
