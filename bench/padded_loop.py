"""The baseline a team writes by hand: tokenise per trial, pad every batch to max_length.

Same model loading, unfreezing, optimiser and schedule as ``trials/finetune.py``; only the
data path differs (static padding, no length bucketing, tokenised inside each trial).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from trials.finetune import Hyperparameters, TrialSettings, _adamw, seed_everything
from trials.metrics import classification_metrics
from trials.model import apply_unfreeze_depth, encoder_layers, load_classifier


def padded_fine_tune(settings: TrialSettings, hp: Hyperparameters, texts: tuple, max_length: int) -> float:
    """Return the best epoch's objective value."""
    (train_texts, train_labels), (val_texts, val_labels) = texts
    torch.set_num_threads(settings.num_threads or 1)
    seed_everything(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(settings.model_path)
    train = tokenizer(train_texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    val = tokenizer(val_texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    model = load_classifier(settings.model_path, settings.label_names, hp.dropout)
    apply_unfreeze_depth(model, len(encoder_layers(model)) if hp.unfreeze_depth is None else hp.unfreeze_depth)
    optimizer = _adamw(model, hp)
    steps = math.ceil(len(train_labels) / hp.batch_size) * settings.max_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(hp.warmup_ratio * steps), steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    labels = torch.as_tensor(train_labels)
    generator = torch.Generator().manual_seed(settings.seed)
    best = -math.inf
    for _ in range(settings.max_epochs):
        model.train()
        for rows in torch.randperm(len(labels), generator=generator).split(hp.batch_size):
            logits = model(input_ids=train["input_ids"][rows], attention_mask=train["attention_mask"][rows]).logits
            loss = loss_fn(logits, labels[rows])
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.inference_mode():
            predictions = np.concatenate([
                model(input_ids=val["input_ids"][i : i + 64], attention_mask=val["attention_mask"][i : i + 64]).logits.argmax(-1).numpy()
                for i in range(0, len(val_labels), 64)
            ])
        best = max(best, classification_metrics(np.asarray(val_labels), predictions, len(settings.label_names))[settings.objective])
    return best
