import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from transformers import AutoTokenizer

from trials.data import DataError, collate, encode, eval_batches, labelled_texts, split, train_batches
from trials.metrics import classification_metrics, majority_baseline


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    predictions[:20] = 0  # make classes uneven
    got = classification_metrics(labels, predictions, 3)
    assert got["val_accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert got["val_f1_macro"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert got["val_precision_macro"] == pytest.approx(precision_score(labels, predictions, average="macro"))
    assert got["val_recall_macro"] == pytest.approx(recall_score(labels, predictions, average="macro"))


def test_majority_baseline():
    baseline = majority_baseline(np.array([0, 1, 1, 1]), np.array([1, 1, 0, 2]), 3)
    assert baseline["val_accuracy"] == 0.5
    assert baseline["val_f1_macro"] == pytest.approx((2 * 0.5 * 1 / 1.5) / 3)


def test_labelled_texts_drops_missing_rows_and_numbers_labels():
    frame = pd.DataFrame({"text": ["a", None, "b", " ", "c"], "y": ["pos", "neg", "neg", "pos", None]})
    data = labelled_texts(frame, "text", "y")
    assert data.texts == ["a", "b"] and data.label_names == ["neg", "pos"] and data.labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="column 'label' is not in the data"):
        labelled_texts(frame, "text", "label")


def test_split_is_disjoint_and_seeded():
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(50)], "y": ["a", "b"] * 25})
    data = labelled_texts(frame, "text", "y")
    train, val = split(data, 30, 10, seed=1)
    assert len(train.texts) == 30 and len(val.texts) == 10 and not set(train.texts) & set(val.texts)
    assert split(data, 30, 10, seed=1)[0].texts == train.texts
    with pytest.raises(DataError, match="50 usable rows"):
        split(data, 45, 10, seed=1)


def test_encode_pads_per_batch_and_buckets_by_length(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["good"] * 40 + ["the plane was good today it is nice"] * 40
    encoded = encode(tokenizer, texts, np.zeros(80, dtype=np.int64), max_length=6)
    assert encoded.lengths.max() == 6  # truncated to max_length
    batch = collate(encoded, np.array([0, 1]), tokenizer.pad_token_id)
    assert batch["input_ids"].shape == (2, 3)  # [CLS] good [SEP]: padded to the batch, not to max_length
    batches = list(train_batches(encoded, 8, np.random.default_rng(0)))
    assert sorted(np.concatenate(batches).tolist()) == list(range(80))
    assert all(len(set(encoded.lengths[b].tolist())) == 1 for b in batches)  # lengths bucketed
    assert sorted(np.concatenate(list(eval_batches(encoded, 16))).tolist()) == list(range(80))
