"""What a sweep's scores are measured against, recorded once in the study (``trial_attrs.SPLITS_ATTR``,
written by ``record_splits``) and shown wherever the scores are: ``hpo best`` (and ``--json``),
``hpo report`` and the MLflow parent run.

- the **majority-class baseline**: the validation score of always predicting the most frequent
  training class (classification), the floor any trial must beat;
- the **overlap**: validation and test rows that also appear in the training split, whose scores
  are optimistic.
"""

from __future__ import annotations

import optuna

from orchestrator.storage.trial_attrs import SPLITS_ATTR


def data_facts(study: optuna.Study) -> dict:
    """The study's recorded rows per split, overlap and baseline; empty for a study recorded before them."""
    recorded = study.user_attrs.get(SPLITS_ATTR) or {}
    return {key: recorded[key] for key in ("rows", "overlap", "baseline") if key in recorded}


def fact_lines(facts: dict, metric: str) -> list[str]:
    """The facts in words, one line each: the baseline of ``metric``, then the overlap."""
    lines = []
    baseline = (facts.get("baseline") or {}).get(metric)
    if baseline is not None:
        lines.append(f"majority-class baseline (validation): {metric} {baseline:.4f}")
    overlap = facts.get("overlap")
    if overlap is not None:
        shared = [(name, count) for name, count in overlap.items() if count]
        if shared:
            lines += [f"{count} {name} row(s) also in the training split: the {name} scores are optimistic" for name, count in shared]
        else:
            lines.append(f"no {' or '.join(overlap)} row appears in the training split")
    return lines
