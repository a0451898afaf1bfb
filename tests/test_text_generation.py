"""task: text-generation: prompt/response pairs (or chat messages) for causal LMs, prompts masked
out of the loss, loss/perplexity/exact-match/token-F1 every epoch, LoRA and full fine-tuning,
checkpoints that resume exactly, and the best model registered as a text-generation pipeline."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator.api import load_sweep
from orchestrator.errors import ConfigError
from orchestrator.run.runner import validate
from tests.conftest import Recorder, comparable_metrics, registered_model
from trials import checkpoint
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.generation_metrics import exact_match, generation_scores, normalize, token_f1
from trials.text_generation import IGNORE_INDEX, collate, encode_pairs, prompt_responses

WORDS = "red green blue black white one two three four five".split()
INSTRUCTIONS = ["reverse", "repeat", "first"]
VOCAB = ["<pad>", "<unk>", "<s>", "</s>", "user", "assistant", ":", ";"] + INSTRUCTIONS + WORDS
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
                 "{% if add_generation_prompt %}assistant : {% endif %}")


def _tokenizer():
    """A word-level tokenizer over VOCAB, built offline, with pad/eos tokens and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", bos_token="<s>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _save_tiny(folder: Path, family: str) -> Path:
    """A 2-layer causal LM of ``family`` (random weights, seeded) and the tokenizer, saved like a pre-trained model."""
    import transformers as t

    ids = dict(vocab_size=len(VOCAB), bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model_class, config = {
        "gpt2": (t.GPT2LMHeadModel, t.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, **ids)),
        "llama": (t.LlamaForCausalLM, t.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                                    intermediate_size=64, max_position_embeddings=64, **ids)),
    }[family]
    _tokenizer().save_pretrained(folder)
    with torch.random.fork_rng():  # the same weights whatever ran before
        torch.manual_seed(0)
        model_class(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Instructions over a few words: reverse them, repeat them, or give the first."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        instruction, words = rng.choice(INSTRUCTIONS), rng.choices(WORDS, k=rng.randint(2, 4))
        answer = {"reverse": words[::-1], "repeat": words, "first": words[:1]}[instruction]
        rows.append({"prompt": f"{instruction} {' '.join(words)} :", "response": " ".join(answer)})
    return rows


@pytest.fixture(scope="session")
def pairs_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    pd.DataFrame(make_pairs(64)).to_json(path, orient="records", lines=True)
    return path


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["response"]}]} for row in make_pairs(64, seed=1)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _trial_data(model_folder: Path, source: Path, train: int = 48) -> TrialData:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    pairs = prompt_responses(pd.read_json(source, lines=True))
    return TrialData(encode_pairs(tokenizer, pairs.take(np.arange(train)), 32), encode_pairs(tokenizer, pairs.take(np.arange(train, len(pairs.responses))), 32))


def _settings(model_folder: Path, **overrides) -> TrialSettings:
    values = dict(model_path=str(model_folder), label_names=["response"], pad_token_id=0, max_epochs=2, objective="val_loss", mode="min",
                  task="text-generation", max_new_tokens=6, generation_samples=8)
    return TrialSettings(**{**values, **overrides})


# ---- data and metrics ----


def test_prompt_tokens_and_padding_are_masked_out_of_the_labels():
    tokenizer = _tokenizer()
    pairs = prompt_responses(pd.DataFrame([{"prompt": "reverse red blue :", "response": "blue red"}, {"prompt": "first one :", "response": "one"}]))
    split = encode_pairs(tokenizer, pairs, 32)
    assert split.prompt_lengths.tolist() == [4, 3]
    batch = collate(split, np.array([0, 1]), pad_id=0)
    eos = tokenizer.eos_token_id
    words = tokenizer.convert_tokens_to_ids
    assert batch["input_ids"].tolist() == [words(["reverse", "red", "blue", ":", "blue", "red"]) + [eos],
                                           words(["first", "one", ":", "one"]) + [eos, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX] * 4 + words(["blue", "red"]) + [eos],
                                        [IGNORE_INDEX] * 3 + words(["one"]) + [eos] + [IGNORE_INDEX] * 2]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1] * 5 + [0] * 2]


def test_long_rows_keep_the_end_of_the_prompt_and_the_start_of_the_response():
    tokenizer = _tokenizer()
    pairs = prompt_responses(pd.DataFrame([{"prompt": " ".join(WORDS), "response": " ".join(WORDS)}]))
    split = encode_pairs(tokenizer, pairs, 8)
    prompt, response = split.row(0)
    assert len(prompt) + len(response) == 8 and len(prompt) == 4
    assert tokenizer.convert_ids_to_tokens(prompt.tolist()) == WORDS[-4:] and tokenizer.convert_ids_to_tokens(response.tolist()) == WORDS[:4]


def test_chat_messages_are_rendered_with_the_chat_template(chat_jsonl):
    tokenizer = _tokenizer()
    pairs = prompt_responses(pd.read_json(chat_jsonl, lines=True))
    split = encode_pairs(tokenizer, pairs.take(np.array([0])), 32)
    prompt, response = split.row(0)
    assert tokenizer.decode(prompt.tolist()) == f"user : {pairs.prompts[0][0]['content']} ; assistant :"
    assert tokenizer.decode(response.tolist(), skip_special_tokens=True) == pairs.responses[0]


def test_messages_that_do_not_end_with_the_answer_are_refused():
    from trials.data import DataError

    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "hi"}]]})
    with pytest.raises(DataError, match="does not end with an assistant message"):
        prompt_responses(frame)
    with pytest.raises(DataError, match="column 'answer' is not in the data"):
        prompt_responses(pd.DataFrame({"prompt": ["a"], "response": ["b"]}), response_column="answer")


def test_exact_match_and_token_f1_score_known_pairs():
    assert normalize("The  Blue, red!") == "blue red"
    assert exact_match("Blue red.", "blue red") == 1.0 and exact_match("blue", "blue red") == 0.0
    assert token_f1("blue red", "blue red") == 1.0
    assert token_f1("blue green", "blue red") == pytest.approx(0.5)  # precision 1/2, recall 1/2
    assert token_f1("blue", "blue red one") == pytest.approx(0.5)  # precision 1, recall 1/3
    assert token_f1("red red", "red") == pytest.approx(2 / 3)  # counted with multiplicity: precision 1/2, recall 1
    assert token_f1("", "") == 1.0 and token_f1("", "red") == 0.0 and token_f1("green", "red") == 0.0
    assert generation_scores(["blue red", "blue"], ["blue red", "blue red one"]) == {"val_exact_match": 0.5, "val_token_f1": pytest.approx(0.75)}


# ---- trials ----


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_trial_learns_and_reports_the_generation_metrics(family, method, tiny_gpt2, tiny_llama, pairs_jsonl, tmp_path):
    folder = {"gpt2": tiny_gpt2, "llama": tiny_llama}[family]
    hyperparameters = Hyperparameters(method=method, learning_rate=2e-2 if method == "full" else 1e-1, batch_size=8, warmup_ratio=0.1, label_smoothing=0.05,
                                      weight_decay=0.01, dropout=0.0, layer_lr_decay=0.9, lora_rank=4)
    recorder = Recorder(tmp_path)
    fine_tune(_settings(folder), hyperparameters, _trial_data(folder, pairs_jsonl), recorder)
    first, last = recorder.metrics
    for metrics in recorder.metrics:
        assert {"val_loss", "val_perplexity", "val_exact_match", "val_token_f1", "train_loss"} <= set(metrics)
        assert metrics["val_perplexity"] == pytest.approx(np.exp(metrics["val_loss"]))
        assert 0.0 <= metrics["val_exact_match"] <= metrics["val_token_f1"] <= 1.0 or metrics["val_exact_match"] == 0.0
    assert last["val_loss"] < first["val_loss"] < np.log(len(VOCAB)) + 0.5
    if method == "lora":
        assert last["trainable_params"] < 5_000  # adapters and the final norm; the vocabulary projection stays frozen


def test_unfreeze_depth_trains_the_top_layers_and_final_norm_only(tiny_gpt2, pairs_jsonl, tmp_path):
    recorder = Recorder(tmp_path)
    fine_tune(_settings(tiny_gpt2, max_epochs=1), Hyperparameters(learning_rate=1e-2, batch_size=16, unfreeze_depth=1), _trial_data(tiny_gpt2, pairs_jsonl), recorder)
    full = Recorder(tmp_path / "full")
    fine_tune(_settings(tiny_gpt2, max_epochs=1), Hyperparameters(learning_rate=1e-2, batch_size=16), _trial_data(tiny_gpt2, pairs_jsonl), full)
    assert 0 < recorder.metrics[0]["trainable_params"] < full.metrics[0]["trainable_params"] / 2


def test_a_restarted_trial_continues_where_it_stopped(tiny_llama, chat_jsonl, tmp_path):
    settings = _settings(tiny_llama, max_epochs=3, checkpoint=True)
    hyperparameters = Hyperparameters(learning_rate=1e-2, batch_size=8, warmup_ratio=0.2)
    data = _trial_data(tiny_llama, chat_jsonl)
    uninterrupted = Recorder(tmp_path / "once")
    fine_tune(settings, hyperparameters, data, uninterrupted)
    assert (tmp_path / "once" / "epoch1" / checkpoint.STATE_FILE).is_file()
    resumed = Recorder(tmp_path / "again")
    fine_tune(settings, hyperparameters, data, resumed, resume=checkpoint.load(tmp_path / "once" / "epoch1"))
    assert [m["epoch"] for m in resumed.metrics] == [2, 3]
    for expected, got in zip(uninterrupted.metrics[1:], resumed.metrics, strict=True):
        assert comparable_metrics(got) == pytest.approx(comparable_metrics(expected), rel=1e-4, abs=1e-6)


# ---- sweeps ----

SPACE = {
    "learning_rate": {"type": "float", "low": 5e-3, "high": 2e-2, "log": True},
    "batch_size": 16,
    "method": {"type": "categorical", "choices": ["full", "lora"]},
    "lora_rank": {"type": "categorical", "choices": [2, 4], "when": {"method": ["lora"]}},
}


def _sweep(write_sweep, model: Path, source: Path, data: dict | None = None, **overrides) -> Path:
    """A text-generation sweep file: write_sweep's, with a data section of its own (not merged with the classification one)."""
    import yaml

    settings = {"task": "text-generation", "model": str(model), "objective": {"metric": "val_loss", "mode": "min"}, "search_space": SPACE}
    path = write_sweep(**{**settings, **overrides})
    sweep = yaml.safe_load(path.read_text())
    sweep["data"] = {"source": str(source), "max_length": 32, "val_size": 16, "max_new_tokens": 6, "generation_samples": 8, **(data or {})}
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_sweep_files_are_checked_for_the_task(write_sweep, tiny_gpt2, tiny_model, pairs_jsonl):
    config = load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="ok"))
    assert config.task == "text-generation" and config.data.max_new_tokens == 6
    problems = [
        (dict(objective={"metric": "val_f1_macro", "mode": "max"}), "objective.metric: 'val_f1_macro'", "val_token_f1"),
        (dict(search_space={**SPACE, "class_balance": "oversample"}), "search_space", "class_balance"),
        (dict(objective={"metric": "val_perplexity", "mode": "max"}), "objective.mode: 'max'", "val_perplexity is better lower; set mode: min"),
        (dict(objective={"metric": "val_token_f1", "mode": "min"}), "objective.mode: 'min'", "set mode: max"),
    ]
    for override, start, fix in problems:
        with pytest.raises(ConfigError) as raised:
            load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="bad", **override))
        assert str(raised.value).startswith(start) and fix in str(raised.value), str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_sweep(write_sweep(name="bad-key", data={"max_new_tokens": 4}))
    assert str(raised.value).startswith("data.max_new_tokens: 4") and "text-generation reads it" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="label", data={"label_column": "label"}))
    assert str(raised.value).startswith("data.label_column: 'label'") and "text-classification and image-classification read it" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(_sweep(write_sweep, tiny_model, pairs_jsonl, name="encoder")))
    assert str(raised.value).startswith("model:") and "no end-of-sequence token" in str(raised.value)  # BERT has a causal-LM head, but no eos
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="columns", data={"response_column": "answer"})))
    assert str(raised.value).startswith("data.response_column: 'answer'") and "not in the data" in str(raised.value)


@pytest.mark.slow
def test_a_sweep_trains_lora_and_full_trials_and_registers_a_loadable_generator(ray_session, write_sweep, tiny_gpt2, pairs_jsonl):
    import optuna

    from orchestrator.api import run_sweep
    from tests.conftest import mlflow_runs

    seeds = [{"method": "full"}, {"method": "lora", "lora_rank": 2}]
    config = load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="textgen", data={"test_size": 10}, seed_trials=seeds, registered_model="tiny-gen",
                               trial={"max_epochs": 2}, budget={"n_trials": 2, "max_concurrent": 2}))
    result = run_sweep(config)
    assert result.trials_this_run == {"COMPLETE": 2} and result.answer["registered"] == "tiny-gen/1", result.answer
    test = result.answer["test"]
    assert test["rows"] == 10 and {"test_loss", "test_perplexity", "test_exact_match", "test_token_f1"} <= set(test["metrics"]), test
    study = optuna.load_study(study_name=config.name, storage=config.storage.study_db)
    assert sorted(t.params["method"] for t in study.trials) == ["full", "lora"]
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)
    _, _, children = mlflow_runs(config)
    trainable = {run.data.params["method"]: run.data.metrics for run in children}
    assert trainable["lora"]["trainable_params"] < trainable["full"]["trainable_params"] / 3
    assert all({"val_perplexity", "val_exact_match", "val_token_f1"} <= set(metrics) for metrics in trainable.values())

    generator = registered_model(config.storage.mlflow, "tiny-gen/1")
    assert type(generator.model).__name__ == "GPT2LMHeadModel"
    assert not any("lora_" in name for name, _ in generator.model.named_parameters())
    output = generator("reverse red blue :", max_new_tokens=3, do_sample=False)
    assert output[0]["generated_text"].startswith("reverse red blue :")


def test_pairs_come_from_a_split_column_or_a_saved_dataset_dict_of_chats(write_sweep, tiny_llama, chat_jsonl, tmp_path):
    import datasets

    rows = make_pairs(60, seed=2)
    table = tmp_path / "pairs.csv"
    pd.DataFrame([{**row, "split": "train" if i < 40 else "validation" if i < 50 else "test"} for i, row in enumerate(rows)]).to_csv(table, index=False)
    prepared = validate(load_sweep(_sweep(write_sweep, tiny_llama, table, name="by-column", data={"split_column": "split", "val_size": None})))
    assert (len(prepared.data.train), len(prepared.data.val), len(prepared.test)) == (40, 10, 10) and prepared.baseline == {}

    chats = pd.read_json(chat_jsonl, lines=True)
    saved = tmp_path / "chats"
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(chats[:48]), "validation": datasets.Dataset.from_pandas(chats[48:])}).save_to_disk(saved)
    prepared = validate(load_sweep(_sweep(write_sweep, tiny_llama, saved, name="dataset-dict", data={"val_size": None})))
    assert (len(prepared.data.train), len(prepared.data.val)) == (48, 16)
    prompt, _ = prepared.data.val.row(0)
    assert _tokenizer().decode(prompt.tolist()).startswith("user : ") and _tokenizer().decode(prompt.tolist()).endswith("assistant :")


def test_no_frozen_layer_cache_is_built_for_causal_lms(write_sweep, tiny_gpt2, pairs_jsonl):
    from orchestrator.data.frozen_layers import with_frozen_cache

    space = {"learning_rate": 1e-2, "batch_size": 16, "unfreeze_depth": {"type": "int", "low": 1, "high": 2}}
    prepared, note = with_frozen_cache(validate(load_sweep(_sweep(write_sweep, tiny_gpt2, pairs_jsonl, name="frozen", search_space=space))))
    assert note is None and prepared.data.frozen.off == "causal language models run every layer"
