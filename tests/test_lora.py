"""method: lora: adapters resolved from each model family's module names, trained by the shared
loop (only adapters and head change), checkpointed and resumed, merged for registration, and
its settings checked against the search space and the model before anything runs."""

from __future__ import annotations

import pytest
import torch

import trials.finetune
from orchestrator.api import load_sweep
from orchestrator.errors import ConfigError
from orchestrator.run.runner import validate
from tests.conftest import TINY_SPACE, Recorder, comparable_metrics, encoded_tiny_data, registered_model
from tests.test_image_classification import IMAGE_SPACE, _image_sweep, digits_folder, tiny_vit  # noqa: F401 (fixtures)
from trials import checkpoint
from trials.finetune import Hyperparameters, TrialSettings, fine_tune
from trials.lora import LoraTargetsError, adapter_groups, merged, target_modules, with_method
from trials.model import count_trainable, load_classifier

LORA = Hyperparameters(method="lora", learning_rate=1e-2, batch_size=16, lora_rank=8, warmup_ratio=0.1)
LORA_SPACE = {
    "method": "lora",
    "learning_rate": {"type": "float", "low": 5e-3, "high": 3e-2, "log": True},
    "batch_size": 16,
    "lora_rank": {"type": "categorical", "choices": [2, 4]},
    "lora_targets": {"type": "categorical", "choices": ["attention", "all_linear"]},
}


def _tiny(family: str):
    """A 2-layer model of ``family`` with random weights and a 3-class head."""
    import transformers as t

    small = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    configs = {
        "bert": (t.BertForSequenceClassification, t.BertConfig(hidden_size=32, **small)),
        "roberta": (t.RobertaForSequenceClassification, t.RobertaConfig(hidden_size=32, **small)),
        "distilbert": (t.DistilBertForSequenceClassification, t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
        "vit": (t.ViTForImageClassification, t.ViTConfig(image_size=32, patch_size=8, hidden_size=32, **small)),
        "llama": (t.LlamaForSequenceClassification, t.LlamaConfig(hidden_size=32, num_key_value_heads=2, vocab_size=100, pad_token_id=0, **small)),
        "gpt2": (t.GPT2ForSequenceClassification, t.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=1)),
        "convnext": (t.ConvNextForImageClassification, t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
        "resnet": (t.ResNetForImageClassification, t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
    }
    cls, config = configs[family]
    config.num_labels = 3
    return cls(config)


# Per family: the top layer's attention modules, then its MLP modules (names relative to the layer).
FAMILY_MODULES = {
    "bert": (["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"], ["intermediate.dense", "output.dense"]),
    "roberta": (["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"], ["intermediate.dense", "output.dense"]),
    "distilbert": (["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"], ["ffn.lin1", "ffn.lin2"]),
    "vit": (["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"], ["mlp.fc1", "mlp.fc2"]),
    "llama": (["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"], ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]),
    "gpt2": (["attn.c_attn", "attn.c_proj"], ["mlp.c_fc", "mlp.c_proj"]),
}


@pytest.mark.parametrize("family", FAMILY_MODULES)
def test_targets_resolve_from_each_familys_module_names(family):
    from trials.model import encoder_layers

    model = _tiny(family)
    layers = encoder_layers(model)
    path = {id(m): name for name, m in model.named_modules()}
    top, bottom = path[id(layers[1])], path[id(layers[0])]
    attention, mlp = FAMILY_MODULES[family]
    assert target_modules(model, "attention", 1) == [f"{top}.{name}" for name in attention]
    assert sorted(target_modules(model, "attention_mlp", 1)) == sorted(f"{top}.{name}" for name in attention + mlp)
    assert sorted(target_modules(model, "all_linear", None)) == sorted(f"{layer}.{name}" for layer in (bottom, top) for name in attention + mlp)
    assert target_modules(model, "attention", 0) == []


def test_models_whose_modules_cannot_be_resolved_are_refused_with_the_fix():
    convnext = _tiny("convnext")  # linear layers, but no attention
    with pytest.raises(LoraTargetsError, match="cannot tell the attention and MLP modules of a convnext model .*use lora_targets: all_linear"):
        target_modules(convnext, "attention", None)
    assert target_modules(convnext, "all_linear", None)
    with pytest.raises(LoraTargetsError, match="a resnet model has no linear modules in its layers.*use method: full"):
        target_modules(_tiny("resnet"), "all_linear", None)


@pytest.mark.parametrize("family", ["bert", "gpt2", "vit"])
def test_only_adapters_and_head_train_and_merging_keeps_the_outputs(family):
    torch.manual_seed(0)
    model = _tiny(family)
    pretrained = {name: p.detach().clone() for name, p in model.named_parameters()}
    adapted = with_method(model, Hyperparameters(method="lora", lora_rank=4, lora_targets="attention_mlp", unfreeze_depth=1))
    trainable = [name for name, p in adapted.named_parameters() if p.requires_grad]
    head = {"bert": "classifier", "gpt2": "score", "vit": "classifier"}[family]
    assert all("lora_" in name or f".{head}." in name or ".pooler." in name or "vit.layernorm" in name or "transformer.ln_f" in name for name in trainable), trainable
    assert any(f".{head}." in name for name in trainable) and any(".1." in name and "lora_" in name for name in trainable)
    assert not any(".0." in name and "lora_" in name for name in trainable)  # unfreeze_depth 1: adapters on the top layer only
    assert count_trainable(adapted) == sum(p.numel() for group in adapter_groups(adapted) for p in group)

    for _name, p in adapted.named_parameters():  # as if trained: every trainable parameter moves
        if p.requires_grad:
            p.data += 0.1 * torch.randn_like(p)
    adapted.eval()
    inputs = {"pixel_values": torch.randn(2, 3, 32, 32)} if family == "vit" else {"input_ids": torch.randint(2, 50, (2, 7))}
    with torch.no_grad():
        before = adapted(**inputs).logits
        plain = merged(adapted)
        after = plain(**inputs).logits
    assert type(plain).__name__ == type(model).__name__ and not any("lora_" in name for name, _ in plain.named_parameters())
    assert torch.allclose(before, after, atol=1e-5)
    assert not torch.allclose(before, (_tiny(family).eval())(**inputs).logits, atol=1e-3)  # not just any model
    frozen = [name for name in pretrained if "embeddings" in name or ".0." in name]
    assert all(torch.equal(dict(plain.named_parameters())[name], pretrained[name]) for name in frozen)


@pytest.fixture(scope="module")
def trial_inputs(tiny_model, tiny_csv):
    label_names, pad_id, data = encoded_tiny_data(tiny_model, tiny_csv, 200, 100)
    settings = TrialSettings(str(tiny_model), label_names, pad_id, max_epochs=3, objective="val_f1_macro", mode="max", num_threads=1, checkpoint=True)
    return settings, data


def test_a_lora_trial_learns_checkpoints_only_adapters_and_head_and_resumes_exactly(trial_inputs, tmp_path):
    settings, data = trial_inputs
    uninterrupted = Recorder(tmp_path)
    fine_tune(settings, LORA, data, uninterrupted)
    assert [m["epoch"] for m in uninterrupted.metrics] == [1, 2, 3]
    every_parameter = sum(p.numel() for p in load_classifier(settings.model_path, settings.label_names).parameters())
    assert uninterrupted.metrics[-1]["trainable_params"] < every_parameter / 2
    assert uninterrupted.metrics[-1]["train_loss"] < uninterrupted.metrics[0]["train_loss"]

    saved = checkpoint.load(tmp_path / "epoch1")
    names = list(saved["trainable"])
    assert names and all("lora_" in name or ".classifier." in name or ".pooler." in name for name in names), names
    assert sum(t.numel() for t in saved["trainable"].values()) == uninterrupted.metrics[0]["trainable_params"]

    resumed = Recorder(tmp_path / "again")
    fine_tune(settings, LORA, data, resumed, resume=checkpoint.load(tmp_path / "epoch1"))
    assert [m["epoch"] for m in resumed.metrics] == [2, 3]
    for expected, got in zip(uninterrupted.metrics[1:], resumed.metrics, strict=True):
        assert comparable_metrics(got) == pytest.approx(comparable_metrics(expected), rel=1e-5)


def test_lora_out_of_memory_halves_the_micro_batch(trial_inputs, tmp_path, monkeypatch):
    from dataclasses import replace

    settings, data = trial_inputs
    settings = replace(settings, max_epochs=1)
    baseline = Recorder(tmp_path / "plain")
    fine_tune(settings, LORA, data, baseline)
    real_forward = trials.finetune.forward_loss

    def forward_without_memory_for_more_than_4_rows(model, batch, loss_fn):
        if len(batch["labels"]) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(model, batch, loss_fn)

    monkeypatch.setattr(trials.finetune, "forward_loss", forward_without_memory_for_more_than_4_rows)
    shrunk = Recorder(tmp_path / "shrunk")
    fine_tune(settings, LORA, data, shrunk)
    assert shrunk.metrics[0]["micro_batch_size"] == 4
    assert shrunk.metrics[0]["val_loss"] == pytest.approx(baseline.metrics[0]["val_loss"], rel=1e-3)


def test_layer_lr_decay_and_gradual_unfreezing_walk_the_adapters(tiny_model):
    model = with_method(load_classifier(str(tiny_model), ["a", "b", "c"]), Hyperparameters(method="lora", lora_targets="attention"))
    groups = adapter_groups(model)
    assert len(groups) == 3  # the head, then the adapters of the top layer, then of the layer below
    assert all(p.requires_grad for group in groups for p in group)
    names = {id(p): name for name, p in model.named_parameters()}
    assert all(".layer.1." in names[id(p)] for p in groups[1]) and all(".layer.0." in names[id(p)] for p in groups[2])



def test_adding_adapters_warns_about_nothing(tiny_model):
    """peft reads a property transformers deprecates: every LoRA model built printed a FutureWarning."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        merged(with_method(load_classifier(str(tiny_model), ["a", "b", "c"]), Hyperparameters(method="lora")))
    assert [str(warning.message) for warning in caught if issubclass(warning.category, (FutureWarning, DeprecationWarning))] == []


SPACE_PROBLEMS = [
    ({**TINY_SPACE, "lora_rank": {"type": "int", "low": 2, "high": 8}}, "search_space.lora_rank", "apply only with method: lora"),
    ({**TINY_SPACE, "method": "full", "lora_dropout": 0.1}, "search_space.lora_dropout", "apply only with method: lora"),
    ({**TINY_SPACE, "method": {"type": "categorical", "choices": ["full", "lora"]}, "lora_rank": {"type": "int", "low": 2, "high": 8}},
     "search_space.lora_rank", "add when: {method: [lora]}"),
    ({**LORA_SPACE, "lora_alpha": 16.0, "lora_alpha_ratio": 2.0}, "search_space.lora_alpha", "not both"),
    ({**LORA_SPACE, "lora_targets": {"type": "categorical", "choices": ["attention", "everything"]}}, "search_space.lora_targets", "lora_targets takes attention, attention_mlp, all_linear"),
    ({**LORA_SPACE, "method": "adapters"}, "search_space.method", "method takes full, lora"),
    ({**LORA_SPACE, "lora_rank": 0}, "search_space.lora_rank", "lora_rank must be a whole number >= 1"),
    ({**LORA_SPACE, "lora_dropout": {"type": "float", "low": 0.0, "high": 1.0}}, "search_space.lora_dropout", "lower high below 1"),
]


@pytest.mark.parametrize("space, field, fix", SPACE_PROBLEMS)
def test_lora_settings_are_checked_against_the_search_space(write_sweep, space, field, fix):
    with pytest.raises(ConfigError) as raised:
        load_sweep(write_sweep(search_space=space))
    message = str(raised.value)
    assert message.startswith(f"{field}:") and fix in message and "\n" not in message, message


def test_conditional_lora_settings_are_searched_only_for_lora_trials(write_sweep):
    import optuna

    space = {
        **TINY_SPACE,
        "method": {"type": "categorical", "choices": ["full", "lora"]},
        "lora_rank": {"type": "categorical", "choices": [2, 4], "when": {"method": ["lora"]}},
        "lora_alpha_ratio": 2.0,
    }
    config = load_sweep(write_sweep(search_space=space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    samples = [config.search_space.sample(study.ask()) for _ in range(12)]
    assert {s["method"] for s in samples} == {"full", "lora"}
    assert all(("lora_rank" in s) == (s["method"] == "lora") for s in samples)
    assert all(Hyperparameters.from_mapping(s) for s in samples)
    preset = load_sweep(write_sweep(name="preset", search_space="lora"))
    assert preset.search_space.fixed["method"] == "lora" and {"learning_rate", "lora_rank"} <= set(preset.search_space.params)


def test_lora_targets_an_unknown_model_cannot_resolve_are_refused_before_anything_runs(write_sweep, tmp_path, tiny_model):
    from transformers import BertTokenizerFast, ConvNextConfig, ConvNextModel

    folder = tmp_path / "convnext-text"  # linear layers, but no attention to find
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).save_pretrained(folder)
    BertTokenizerFast.from_pretrained(tiny_model).save_pretrained(folder)
    path = write_sweep(model=str(folder), search_space={**LORA_SPACE, "unfreeze_depth": 1})
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(path))
    message = str(raised.value)
    assert message.startswith("search_space.lora_targets: 'attention' is invalid: cannot tell the attention and MLP modules of a convnext model"), message
    assert "use lora_targets: all_linear" in message and "\n" not in message
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists()


# ---- real sweeps through Ray ----


@pytest.mark.slow
def test_a_text_lora_sweep_registers_the_merged_model_which_scores_what_its_trial_did(ray_session, write_sweep):
    import numpy as np
    import optuna

    from orchestrator.api import run_sweep
    from tests.conftest import mlflow_runs
    from trials.metrics import classification_metrics

    config = load_sweep(write_sweep(name="lora-text", search_space=LORA_SPACE, registered_model="tiny-lora", trial={"max_epochs": 2},
                                    budget={"n_trials": 2, "max_concurrent": 2}))
    result = run_sweep(config)
    assert result.trials_this_run == {"COMPLETE": 2} and result.answer["registered"] == "tiny-lora/1", result.answer
    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    assert all(t.params["lora_rank"] in (2, 4) and t.params["lora_targets"] in ("attention", "all_linear") for t in study.trials)
    client, _, children = mlflow_runs(config)
    assert all(run.data.metrics["trainable_params"] < 10_000 for run in children)  # the tiny BERT has 21,219 parameters

    classifier = registered_model(config.storage.mlflow, "tiny-lora/1")
    assert type(classifier.model).__name__ == "BertForSequenceClassification"
    assert not any("lora_" in name for name, _ in classifier.model.named_parameters())
    prepared = validate(config)
    validation = prepared.splits.validation
    predicted = [output["label"] for output in classifier(list(validation.texts), truncation=True, max_length=16)]
    scores = classification_metrics(validation.labels, np.array([prepared.label_names.index(label) for label in predicted]), len(prepared.label_names))
    assert scores["val_f1_macro"] == pytest.approx(study.best_value, abs=0.02)


@pytest.mark.slow
def test_an_image_sweep_searches_lora_beside_full_fine_tuning(ray_session, write_sweep, tiny_vit, digits_folder):  # noqa: F811 (fixtures imported above)
    import optuna

    from orchestrator.api import run_sweep
    from tests.conftest import mlflow_runs

    space = {
        **IMAGE_SPACE,
        "method": {"type": "categorical", "choices": ["full", "lora"]},
        "lora_rank": {"type": "categorical", "choices": [2, 4], "when": {"method": ["lora"]}},
        "lora_targets": {"type": "categorical", "choices": ["attention", "attention_mlp"], "when": {"method": ["lora"]}},
    }
    seeds = [{"method": "full", "unfreeze_depth": 2}, {"method": "lora", "unfreeze_depth": 2, "lora_rank": 2}]
    config = load_sweep(_image_sweep(write_sweep, tiny_vit, digits_folder, name="lora-images", search_space=space, seed_trials=seeds,
                                     trial={"max_epochs": 2}, budget={"n_trials": 2, "max_concurrent": 2}))
    result = run_sweep(config)
    assert result.trials_this_run == {"COMPLETE": 2}
    trials = sorted(optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials, key=lambda t: t.params["method"])
    assert [t.params["method"] for t in trials] == ["full", "lora"]
    assert "lora_rank" not in trials[0].params and trials[1].params["lora_rank"] == 2
    assert all(sorted(t.intermediate_values) == [1, 2] and 0.0 <= t.value <= 1.0 for t in trials)
    _, _, children = mlflow_runs(config)
    trainable = {run.data.params["method"]: run.data.metrics["trainable_params"] for run in children}
    assert trainable["lora"] < trainable["full"] / 3
