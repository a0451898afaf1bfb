"""Load a pre-trained encoder with a fresh classification head, and choose which layers train."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

# Config attributes that hold the hidden-layer dropout in common encoder families
# (BERT/RoBERTa/ELECTRA/DeBERTa: hidden_dropout_prob; DistilBERT: dropout; XLM/others: dropout).
_DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "dropout", "hidden_dropout")
_ATTENTION_DROPOUT_ATTRIBUTES = ("attention_probs_dropout_prob", "attention_dropout")


class LayerStackNotFoundError(ValueError):
    """The model has no recognisable stack of encoder layers, so unfreeze depth cannot apply."""


def load_classifier(model_path: str, label_names: list[str], dropout: float | None = None) -> nn.Module:
    """Load ``model_path`` (local folder or hub id) with a classification head for ``label_names``.

    ``dropout``, when given, replaces the hidden and attention dropout probabilities.
    """
    config = AutoConfig.from_pretrained(
        model_path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )
    if dropout is not None:
        for attribute in _DROPOUT_ATTRIBUTES + _ATTENTION_DROPOUT_ATTRIBUTES:
            if hasattr(config, attribute):
                setattr(config, attribute, float(dropout))
    return AutoModelForSequenceClassification.from_pretrained(model_path, config=config)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of encoder layers: the longest ``nn.ModuleList`` inside its base model.

    Works for BERT-like models (``encoder.layer``), DistilBERT (``transformer.layer``),
    and others that keep their blocks in one list.
    """
    base = getattr(model, "base_model", model)
    stacks = [module for module in base.modules() if isinstance(module, nn.ModuleList) and len(module) > 0]
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if expected is not None:
        matching = [stack for stack in stacks if len(stack) == expected]
        stacks = matching or stacks
    if not stacks:
        raise LayerStackNotFoundError(
            f"{type(model).__name__} has no list of encoder layers, so unfreeze_depth cannot be applied; "
            "fix the search space's unfreeze_depth to the full depth or use a BERT-like encoder"
        )
    return max(stacks, key=len)


def apply_unfreeze_depth(model: nn.Module, depth: int) -> None:
    """Train only the top ``depth`` encoder layers and everything outside the base model.

    ``depth`` 0 trains the classification head alone (and the pooler, which belongs to it);
    ``depth`` equal to the number of layers is full fine-tuning (embeddings included);
    below that, embeddings stay frozen.
    """
    layers = encoder_layers(model)
    if not 0 <= depth <= len(layers):
        raise ValueError(f"unfreeze_depth must be between 0 and {len(layers)} for this model, got {depth}")
    base = getattr(model, "base_model", model)
    full = depth == len(layers)
    for parameter in base.parameters():
        parameter.requires_grad = full
    for layer in list(layers)[len(layers) - depth :] if depth else []:
        for parameter in layer.parameters():
            parameter.requires_grad = True
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module):
        for parameter in pooler.parameters():
            parameter.requires_grad = True


def layer_groups(model: nn.Module, depth: int) -> list[list[nn.Parameter]]:
    """The parameters that ``apply_unfreeze_depth(model, depth)`` trains, grouped from the top:
    the head (with the pooler), then each of the top ``depth`` encoder layers, then, at full
    depth, the rest of the base model (embeddings). Layer-wise learning-rate decay and gradual
    unfreezing walk this list."""
    layers = list(encoder_layers(model))
    base = getattr(model, "base_model", model)
    in_base = {id(p) for p in base.parameters()}
    pooler = getattr(base, "pooler", None)
    pooler_params = list(pooler.parameters()) if isinstance(pooler, nn.Module) else []
    head = [p for p in model.parameters() if id(p) not in in_base] + pooler_params
    groups = [head] + [list(layer.parameters()) for layer in reversed(layers[len(layers) - depth :])] if depth else [head]
    if depth == len(layers):
        grouped = {id(p) for group in groups for p in group}
        groups.append([p for p in base.parameters() if id(p) not in grouped])
    return [group for group in groups if group]


def count_trainable(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def pick_device(want_gpu: bool) -> torch.device:
    return torch.device("cuda") if want_gpu and torch.cuda.is_available() else torch.device("cpu")
