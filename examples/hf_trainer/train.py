"""An existing Hugging Face ``Trainer`` script as the trial of a sweep (``trial.function``).

Compared with the script as a team would have it, two lines are new (marked "hpo"), and the
settings to search come from ``config`` instead of constants. The model and the data are fixed
values of the search space, so the same script serves other sweeps; ``bundled:`` names are the
model and tweets that ship with hpo.

    hpo run examples/hf_trainer/sweep.yaml
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from trials.hf import ReportCallback  # hpo


class TextDataset(torch.utils.data.Dataset):
    def __init__(self, tokenizer, texts, labels):
        self.encodings = tokenizer(list(texts), truncation=True, max_length=64)
        self.labels = list(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {**{key: values[index] for key, values in self.encodings.items()}, "labels": self.labels[index]}


def compute_metrics(prediction) -> dict:
    predicted, labels = prediction.predictions.argmax(-1), prediction.label_ids
    classes = np.unique(np.concatenate([labels, predicted]))
    f1 = [2 * np.sum((predicted == c) & (labels == c)) / max(1, np.sum(predicted == c) + np.sum(labels == c)) for c in classes]
    return {"accuracy": float(np.mean(predicted == labels)), "f1_macro": float(np.mean(f1))}


def _locate(reference: str) -> str:
    """A bundled model or dataset's path; anything else as given."""
    if not reference.startswith("bundled:"):
        return reference
    from orchestrator.sweep.bundled import BUNDLED_MODELS, bundled_dataset, bundled_model_path

    name = reference.removeprefix("bundled:")
    return str(bundled_model_path(reference) if name in BUNDLED_MODELS else bundled_dataset(reference)[0])


def main(config: dict) -> None:
    frame = pd.read_csv(_locate(config["data"]), encoding_errors="replace")[[config["text_column"], config["label_column"]]].dropna()
    frame = frame.sample(n=config["train_size"] + config["val_size"], random_state=0)
    names = sorted(frame[config["label_column"]].astype(str).unique())
    labels = frame[config["label_column"]].astype(str).map({name: i for i, name in enumerate(names)})
    texts = frame[config["text_column"]].astype(str)
    model_path = _locate(config["model"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train = TextDataset(tokenizer, texts.iloc[: config["train_size"]], labels.iloc[: config["train_size"]])
    val = TextDataset(tokenizer, texts.iloc[config["train_size"] :], labels.iloc[config["train_size"] :])
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(names))

    with tempfile.TemporaryDirectory() as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            learning_rate=config["learning_rate"],
            weight_decay=config["weight_decay"],
            per_device_train_batch_size=config["batch_size"],
            num_train_epochs=config["epochs"],
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train, eval_dataset=val, processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=[ReportCallback()],  # hpo
        )
        trainer.train()
