"""Load a pre-trained encoder (text or vision) with a fresh classification head, choose which
layers train, and run it from a layer boundary (the frozen-layer cache, :mod:`trials.frozen_cache`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

# Config attributes that hold the hidden-layer dropout in common encoder families
# (BERT/RoBERTa/ELECTRA/DeBERTa: hidden_dropout_prob; DistilBERT: dropout; XLM/others: dropout).
_DROPOUT_ATTRIBUTES = ("hidden_dropout_prob", "dropout", "hidden_dropout")
_ATTENTION_DROPOUT_ATTRIBUTES = ("attention_probs_dropout_prob", "attention_dropout")


# Parts of the base model that sit above the layer stack (pooler; ViT's and ConvNeXt's final
# norm; GPT-2's ln_f and Llama's norm): they train with the head at every unfreeze depth.
_ABOVE_THE_STACK = ("pooler", "layernorm", "ln_f", "norm")


class LayerStackNotFoundError(ValueError):
    """The model has no recognisable stack of encoder layers, so unfreeze depth cannot apply."""


class UnsplittableModelError(ValueError):
    """The model cannot be run from a layer boundary (its hidden states there as input), so its
    frozen layers cannot be cached; the message says why."""


def layer_count(config) -> int | None:
    """How many layers unfreeze depth counts: transformer blocks (``num_hidden_layers``: BERT,
    ViT, ...) or, for convolutional networks, stages (``depths``: ResNet, ConvNeXt)."""
    count = getattr(config, "num_hidden_layers", None)
    if count is None and getattr(config, "depths", None):
        count = len(config.depths)
    return count


def load_classifier(model_path: str, label_names: list[str], dropout: float | None = None, auto_class=AutoModelForSequenceClassification) -> nn.Module:
    """Load ``model_path`` (local folder or hub id) with a classification head for ``label_names``.

    ``dropout``, when given, replaces the hidden and attention dropout probabilities.
    ``auto_class`` picks the head (``AutoModelForImageClassification`` for vision models); a
    head the checkpoint has for other labels (ImageNet's 1,000) is replaced.
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
    return auto_class.from_pretrained(model_path, config=config, ignore_mismatched_sizes=True)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of encoder layers: the longest ``nn.ModuleList`` inside its base model.

    Works for BERT-like models (``encoder.layer``), DistilBERT (``transformer.layer``), ViT,
    ResNet and ConvNeXt (``encoder.stages``), and others that keep their blocks in one list.
    """
    base = getattr(model, "base_model", model)
    stacks = [module for module in base.modules() if isinstance(module, nn.ModuleList) and len(module) > 0]
    expected = layer_count(getattr(model, "config", None))
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

    ``depth`` 0 trains the classification head alone (and the pooler or final norm, which belong to it);
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
    for parameter in _above_the_stack(base):
        parameter.requires_grad = True


def layer_groups(model: nn.Module, depth: int) -> list[list[nn.Parameter]]:
    """The parameters that ``apply_unfreeze_depth(model, depth)`` trains, grouped from the top:
    the head (with the pooler or final norm), then each of the top ``depth`` encoder layers, then, at full
    depth, the rest of the base model (embeddings). Layer-wise learning-rate decay and gradual
    unfreezing walk this list."""
    layers = list(encoder_layers(model))
    base = getattr(model, "base_model", model)
    in_base = {id(p) for p in base.parameters()}
    head = [p for p in model.parameters() if id(p) not in in_base] + _above_the_stack(base)
    groups = [head] + [list(layer.parameters()) for layer in reversed(layers[len(layers) - depth :])] if depth else [head]
    if depth == len(layers):
        grouped = {id(p) for group in groups for p in group}
        groups.append([p for p in base.parameters() if id(p) not in grouped])
    return [group for group in groups if group]


def _above_the_stack(base: nn.Module) -> list[nn.Parameter]:
    parts = [getattr(base, name, None) for name in _ABOVE_THE_STACK]
    return [p for part in parts if isinstance(part, nn.Module) for p in part.parameters()]


def count_trainable(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def pick_device(want_gpu: bool) -> torch.device:
    return torch.device("cuda") if want_gpu and torch.cuda.is_available() else torch.device("cpu")


def _stack_holder(model: nn.Module) -> tuple[nn.Module, nn.Module, str]:
    """(embeddings, the module holding the layer stack, the stack's attribute name) of a
    transformer encoder whose base model runs ``embeddings`` and then each layer of the stack on
    a (rows, tokens, width) tensor; else :class:`UnsplittableModelError` saying why not."""
    name = type(model).__name__
    base = getattr(_unwrapped(model), "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    if not isinstance(embeddings, nn.Module):
        raise UnsplittableModelError(f"{name} has no embeddings module ahead of its layer stack (convolutional stages?); "
                                     "only transformer encoders (BERT, RoBERTa, DistilBERT, ViT, ...) can start from a cached layer")
    try:
        stack = encoder_layers(model)
    except LayerStackNotFoundError as error:
        raise UnsplittableModelError(str(error)) from None
    holder, attribute = next((holder, attribute) for holder in base.modules() for attribute, child in holder.named_children() if child is stack)
    return embeddings, holder, attribute


def _unwrapped(model: nn.Module) -> nn.Module:
    """The transformers model inside a wrapper that adds adapters (a ``peft.PeftModel``): its
    embeddings and layer stack are the model's own, adapters on the top layers included."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def check_splittable(model: nn.Module) -> None:
    """Raise :class:`UnsplittableModelError` (saying why) unless :func:`layers_from` can run ``model``."""
    _stack_holder(model)


class _GivenHiddenStates(nn.Module):
    """Stands in for the embeddings: hands on the hidden states the model was called with (as
    ``inputs_embeds``, or ``pixel_values`` for vision models); attributes the model reads from its
    embeddings (ViT: the patch projection's dtype) are the real ones'."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_real", embeddings)  # not a submodule: its parameters stay where they are

    def forward(self, *args, **kwargs) -> torch.Tensor:
        for value in (kwargs.get("inputs_embeds"), kwargs.get("pixel_values"), *args):
            if isinstance(value, torch.Tensor):
                return value
        raise UnsplittableModelError("the model called its embeddings without the cached hidden states")

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_real"), name)


@contextmanager
def layers_from(model: nn.Module, boundary: int) -> Iterator[None]:
    """While open, the model takes the hidden states at ``boundary`` (the output of its bottom
    ``boundary`` layers) in place of its inputs and runs only the layers above it, its own
    attention mask and head included. Parameter names are unchanged outside. A model with LoRA
    adapters (a ``peft.PeftModel``) runs its wrapped model this way."""
    model = _unwrapped(model)
    embeddings, holder, attribute = _stack_holder(model)
    stack = getattr(holder, attribute)
    base = getattr(model, "base_model", model)
    embeddings_name = next(name for name, child in base.named_children() if child is embeddings)
    setattr(holder, attribute, nn.ModuleList(list(stack)[boundary:]))
    setattr(base, embeddings_name, _GivenHiddenStates(embeddings))
    try:
        yield
    finally:
        setattr(base, embeddings_name, embeddings)
        setattr(holder, attribute, stack)


@torch.inference_mode()
def hidden_states_at(model: nn.Module, inputs: dict[str, torch.Tensor], boundaries: list[int]) -> dict[int, torch.Tensor]:
    """The hidden states of ``inputs`` at each of ``boundaries`` (0: the embeddings' output, ``b``:
    the output of the bottom ``b`` layers), computed in inference mode (no dropout); layers above
    the deepest boundary do not run."""
    embeddings, holder, attribute = _stack_holder(model)
    stack = getattr(holder, attribute)
    deepest = max(boundaries)
    outputs: dict[int, torch.Tensor] = {}

    def keep(boundary: int):
        def hook(module, args, output):
            if boundary in boundaries:
                outputs[boundary] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [embeddings.register_forward_hook(keep(0))]
    handles += [layer.register_forward_hook(keep(index + 1)) for index, layer in enumerate(list(stack)[:deepest])]
    setattr(holder, attribute, nn.ModuleList(list(stack)[:deepest]))
    was_training = model.training
    model.eval()
    try:
        model(**inputs)
    finally:
        setattr(holder, attribute, stack)
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return outputs


class FromBoundary(nn.Module):
    """Runs ``model`` from its layer ``boundary``: called with the hidden states there (see
    :func:`layers_from`) and the attention mask, it returns the model's outputs."""

    def __init__(self, model: nn.Module, boundary: int) -> None:
        super().__init__()
        self.model = model
        self.boundary = boundary

    def forward(self, **inputs):
        with layers_from(self.model, self.boundary):
            return self.model(**inputs)
