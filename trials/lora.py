"""``method: lora``: low-rank adapters (``peft``) on the linear modules of the top layers.

Which modules get adapters (``lora_targets``) is read from the model's own module names: a layer
of a known family names its attention projections and its MLP; ``all_linear`` takes every linear
module of the layer. ``unfreeze_depth`` keeps its meaning: adapters go on the top ``k`` layers of
the stack that :func:`trials.model.encoder_layers` finds (what peft's ``layers_to_transform`` would
select), and the classification head (with the pooler or final norm) trains in full.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeGuard

from torch import nn

from trials.hyperparameters import Hyperparameters
from trials.model import encoder_layers, layer_groups

if TYPE_CHECKING:  # peft is imported where a LoRA trial runs
    from peft import PeftModel


@dataclass(frozen=True)
class Family:
    """Module-name suffixes, relative to one layer of the stack, of a model family's attention
    projections and of its MLP. A family fits a layer when every suffix names a linear module of it."""

    attention: tuple[str, ...]
    mlp: tuple[str, ...]
    fan_in_fan_out: bool = False  # GPT-2's Conv1D keeps its weight transposed


FAMILIES: dict[str, Family] = {
    "BERT-like (BERT, RoBERTa, ELECTRA, MiniLM)": Family(("query", "key", "value", "attention.output.dense"), ("intermediate.dense", "output.dense")),
    "DistilBERT": Family(("q_lin", "k_lin", "v_lin", "out_lin"), ("ffn.lin1", "ffn.lin2")),
    "ViT": Family(("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"), ("mlp.fc1", "mlp.fc2")),
    "Llama-like (Llama, Mistral, Qwen)": Family(("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")),
    "GPT-2-like": Family(("attn.c_attn", "attn.c_proj"), ("mlp.c_fc", "mlp.c_proj"), fan_in_fan_out=True),
}


class LoraTargetsError(ValueError):
    """The model's modules cannot be resolved to the asked ``lora_targets``."""


def _linear_names(layer: nn.Module) -> list[str]:
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in layer.named_modules() if isinstance(module, (nn.Linear, Conv1D))]


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def family_of(layer: nn.Module) -> tuple[str, Family] | None:
    names = _linear_names(layer)
    for label, family in FAMILIES.items():
        if all(any(_matches(name, suffix) for name in names) for suffix in family.attention + family.mlp):
            return label, family
    return None


def target_modules(model: nn.Module, targets: str, depth: int | None) -> list[str]:
    """The full names of the modules that get adapters: ``targets`` resolved in each of the top
    ``depth`` layers (all layers when None)."""
    layers = encoder_layers(model)
    depth = len(layers) if depth is None else depth
    top = list(layers)[len(layers) - depth :] if depth else []
    paths = {id(module): name for name, module in model.named_modules()}
    linear = _linear_names(layers[-1])
    if not linear:
        raise LoraTargetsError(f"a {_model_type(model)} model has no linear modules in its layers, so LoRA has nothing to adapt; use method: full")
    if targets == "all_linear":
        suffixes: tuple[str, ...] = tuple(linear)
    else:
        found = family_of(layers[-1])
        if found is None:
            raise LoraTargetsError(
                f"cannot tell the attention and MLP modules of a {_model_type(model)} model (its layers hold {', '.join(linear[:6])}); "
                f"use lora_targets: all_linear, or a model of a known family ({', '.join(FAMILIES)})"
            )
        family = found[1]
        suffixes = family.attention + (family.mlp if targets == "attention_mlp" else ())
    return [
        f"{paths[id(layer)]}.{name}" for layer in top for name in _linear_names(layer) if any(_matches(name, suffix) for suffix in suffixes)
    ]


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def with_method(model: nn.Module, hyperparameters: Hyperparameters) -> nn.Module:
    """``model`` as ``hyperparameters.method`` trains it: with adapters for ``lora``, as it is for ``full``."""
    return add_adapters(model, hyperparameters) if hyperparameters.method == "lora" else model


def add_adapters(model: nn.Module, hyperparameters: Hyperparameters) -> nn.Module:
    """``model`` with LoRA adapters on the top ``unfreeze_depth`` layers (a ``peft.PeftModel``):
    only the adapters and the classification head train."""
    from peft import LoraConfig, get_peft_model

    rank = hyperparameters.lora_rank
    alpha = hyperparameters.lora_alpha if hyperparameters.lora_alpha is not None else hyperparameters.lora_alpha_ratio * rank
    layers = encoder_layers(model)
    found = family_of(layers[-1])
    config = LoraConfig(
        r=rank, lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; it only computes alpha / r, a float is fine
        lora_dropout=hyperparameters.lora_dropout,
        target_modules=target_modules(model, hyperparameters.lora_targets, hyperparameters.unfreeze_depth),
        fan_in_fan_out=found is not None and found[1].fan_in_fan_out,
    )
    with warnings.catch_warnings():
        # peft reads model.is_gradient_checkpointing, which transformers deprecates for is_activation_checkpointing:
        # a FutureWarning from every LoRA model built (each trial, the test score, the registration) that only peft can fix.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        adapted = get_peft_model(model, config)
    for parameter in head_parameters(model):
        parameter.requires_grad = True
    return adapted


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classification head's parameters, with the pooler or final norm above the layer stack.
    A causal language model's head is its vocabulary projection (output embeddings): as large as
    the embeddings, it stays frozen under LoRA, and only the final norm trains beside the adapters."""
    groups = layer_groups(model, 0)
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    output = get_output_embeddings() if callable(get_output_embeddings) else None
    vocabulary = {id(p) for p in output.parameters()} if isinstance(output, nn.Module) else set()
    return [p for p in (groups[0] if groups else []) if id(p) not in vocabulary]


def adapter_groups(adapted: PeftModel) -> list[list[nn.Parameter]]:
    """What trains, grouped from the top like :func:`trials.model.layer_groups`: the head, then
    the adapters of each adapted layer. Layer-wise learning-rate decay and gradual unfreezing walk this list."""
    model = adapted.get_base_model()
    groups = [head_parameters(model)]
    for layer in reversed(list(encoder_layers(model))):
        groups.append([p for name, p in layer.named_parameters() if "lora_" in name])
    return [group for group in groups if group]


def is_adapted(model: nn.Module) -> TypeGuard[PeftModel]:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged(model: nn.Module) -> nn.Module:
    """The plain ``transformers`` model with the adapters folded into its weights (``merge_and_unload``);
    a model without adapters as it is."""
    return model.merge_and_unload() if is_adapted(model) else model
