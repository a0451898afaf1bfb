"""Unfreeze depth and dropout overrides on a tiny BERT config."""

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from trials.model import LayerStackNotFoundError, apply_unfreeze_depth, count_trainable, encoder_layers, load_classifier


@pytest.fixture
def tiny_bert():
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, num_labels=3)
    return BertForSequenceClassification(config)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_trainable_parameters_for_each_depth(tiny_bert):
    layers = tiny_bert.bert.encoder.layer
    head = _count(tiny_bert.classifier) + _count(tiny_bert.bert.pooler)
    per_layer = _count(layers[0])
    for depth in range(0, 3):
        apply_unfreeze_depth(tiny_bert, depth)
        assert count_trainable(tiny_bert) == head + depth * per_layer
        trainable_layers = [i for i, layer in enumerate(layers) if all(p.requires_grad for p in layer.parameters())]
        assert trainable_layers == list(range(3 - depth, 3))  # the top layers train first
        assert not any(p.requires_grad for p in tiny_bert.bert.embeddings.parameters())
    apply_unfreeze_depth(tiny_bert, 3)  # full depth is full fine-tuning
    assert count_trainable(tiny_bert) == _count(tiny_bert)


def test_depth_out_of_range(tiny_bert):
    with pytest.raises(ValueError, match="between 0 and 3"):
        apply_unfreeze_depth(tiny_bert, 4)


def test_finds_the_layer_stack_of_other_architectures():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32))
    assert encoder_layers(model) is model.distilbert.transformer.layer
    apply_unfreeze_depth(model, 1)
    assert all(p.requires_grad for p in model.distilbert.transformer.layer[1].parameters())
    assert not any(p.requires_grad for p in model.distilbert.transformer.layer[0].parameters())


def test_model_without_layer_stack_is_a_clear_error():
    with pytest.raises(LayerStackNotFoundError, match="no list of encoder layers"):
        encoder_layers(nn.Sequential(nn.Linear(2, 2)))


def test_load_classifier_applies_dropout_and_labels(tiny_model):
    model = load_classifier(str(tiny_model), ["neg", "neu", "pos"], dropout=0.25)
    assert model.config.hidden_dropout_prob == 0.25
    assert model.config.attention_probs_dropout_prob == 0.25
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    logits = model(input_ids=torch.tensor([[2, 5, 3]])).logits
    assert logits.shape == (1, 3)
