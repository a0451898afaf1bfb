"""What a sweep hands over behaves as it was measured: the registered model of each built-in task,
loaded with `mlflow.transformers.load_model` and `mlflow.pyfunc.load_model` (what `mlflow models
serve` runs), predicts what the sweep's test scoring computed, on inputs longer than the model's
position limit and on an empty string too; the registry says where the model came from; and
`hpo best`'s YAML, pasted into a sweep, runs exactly the chosen configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from orchestrator.api import load_sweep, run_sweep
from orchestrator.cli import app
from tests.conftest import WORDS, make_rows, mlflow_runs

pytestmark = pytest.mark.slow

POSITIONS = 64  # the tiny models' position limit (tests/conftest.py tiny_model, tests/test_text_generation.py)
LORA_SPACE = {
    "method": "lora", "lora_alpha_ratio": 4.0, "lora_targets": "attention", "batch_size": 16, "warmup_ratio": 0.1,
    "learning_rate": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True},
    "lora_rank": {"type": "categorical", "choices": [2, 4]},
}


def _long(text: str, words: int = 3 * POSITIONS) -> str:
    """``text`` followed by enough neutral words to pass the model's position limit."""
    filler = WORDS["neutral"] * (words // len(WORDS["neutral"]) + 1)
    return f"{text} {' '.join(filler[:words])}"


def _loaded(tracking_uri: str, name_version: str):
    """(the transformers pipeline, the pyfunc model) of a registered version, loaded as users load them."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.transformers.load_model(f"models:/{name_version}"), mlflow.pyfunc.load_model(f"models:/{name_version}")
    finally:
        mlflow.set_tracking_uri(None)


def _write_sweep(folder: Path, name: str, **sections) -> Path:
    sweep = {
        "name": name, "objective": {"metric": "val_f1_macro", "mode": "max"}, "trial": {"max_epochs": 1},
        "budget": {"n_trials": 2, "max_concurrent": 2}, "sampler": {"name": "tpe", "seed": 0}, "resources": {"cpu": 1, "gpu": 0},
        "storage": {"study_db": f"sqlite:///{folder / 'study.db'}", "mlflow": f"sqlite:///{folder / 'mlruns.db'}", "results_dir": str(folder / "runs")},
        **sections,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


# ---- text classification (LoRA, fixed values, confirmation) ----


@pytest.fixture(scope="module")
def text_sweep(tmp_path_factory, tiny_model, ray_session):
    """A LoRA text-classification sweep with fixed values, confirmation and a registered model, whose
    test split holds texts three times longer than the model's position limit."""
    folder = tmp_path_factory.mktemp("registered-text")
    test_rows = make_rows(60, seed=2)
    for row in test_rows[::3]:
        row["text"] = _long(row["text"])
    for file, rows in (("train.csv", make_rows(400)), ("val.csv", make_rows(100, seed=1)), ("test.csv", test_rows)):
        pd.DataFrame(rows).to_csv(folder / file, index=False)
    path = _write_sweep(
        folder, "text", model=str(tiny_model), search_space=LORA_SPACE, confirm={"top_k": 1, "seeds": 1}, registered_model="tiny-text",
        data={"source": str(folder / "train.csv"), "validation": str(folder / "val.csv"), "test": str(folder / "test.csv"), "max_length": 16},
    )
    config = load_sweep(path)
    result = run_sweep(config)
    assert result.answer is not None and result.answer["registered"] == "tiny-text/1", result.answer
    return config, result, pd.DataFrame(test_rows)


def test_the_text_classifier_reads_long_and_empty_texts_as_the_sweep_scored_them(text_sweep):
    from transformers import AutoTokenizer

    from trials.data import encode
    from trials.finetune import TrialSettings, predict
    from trials.tasks import task_for

    config, result, test = text_sweep
    shutil.rmtree(config.storage.results_dir)  # Ray Tune's working files: the registry must not need them
    classifier, served = _loaded(config.storage.mlflow, "tiny-text/1")
    labels = list(classifier.model.config.id2label.values())
    assert labels == sorted(set(test["label"]))
    texts = test["text"].tolist()
    assert max(len(classifier.tokenizer(text)["input_ids"]) for text in texts) > POSITIONS

    def confusion(predicted):
        counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
        np.add.at(counts, ([labels.index(label) for label in test["label"]], [labels.index(label) for label in predicted]), 1)
        return counts.tolist()

    native = [output["label"] for output in classifier(texts, truncation=True)]
    pyfunc = served.predict(texts)["label"].tolist()
    assert native == pyfunc
    assert confusion(native) == result.answer["test"]["confusion"]  # the sweep's test scoring of the same rows

    # Rows the sweep never saw: longer than the model's positions, and empty. The sweep's own scoring
    # code (tokenise at data.max_length, then predict) on the registered weights is the reference.
    extra = [_long("good great love", 10 * POSITIONS), ""]
    settings = TrialSettings(config.model, labels, 0, max_epochs=1, objective="", mode="max")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    _, reference = predict(classifier.model, task_for(settings), encode(tokenizer, extra, np.zeros(len(extra), dtype=np.int64), 16), batch_size=8, device=torch.device("cpu"))
    expected = [labels[i] for i in reference]
    assert [output["label"] for output in classifier(extra, truncation=True)] == expected
    assert served.predict(extra)["label"].tolist() == expected


def test_the_registry_names_the_study_the_search_trial_and_the_runs(text_sweep):
    config, result, _ = text_sweep
    client, parents, children = mlflow_runs(config)
    version = client.get_model_version("tiny-text", "1")
    confirmation = next(run for run in children if run.data.tags.get("hpo.role") == "confirm")
    chosen = result.answer["trial"]
    assert version.tags["hpo.study"] == "text" and version.tags["hpo.search_trial"] == version.tags["hpo.optuna_trial_number"] == str(chosen)
    assert version.tags["hpo.source_run_id"] == confirmation.info.run_id and confirmation.data.tags["hpo.confirms"] == str(chosen)
    assert "truncation=True" in version.tags["hpo.inference"] and f"search trial {chosen}" in version.description
    (parent,) = parents
    assert version.run_id == parent.info.run_id  # the parent run's page lists the version
    assert parent.data.tags["hpo.registered_model"] == "tiny-text/1" and version.tags["hpo.parent_run_id"] == parent.info.run_id
    location = Path(client.get_logged_model(version.source.removeprefix("models:/")).artifact_location.removeprefix("file://"))
    assert (location / "MLmodel").is_file()
    assert location.is_relative_to(Path(config.storage.mlflow.removeprefix("sqlite:///")).parent / "mlartifacts")


def test_pasting_hpo_best_into_a_sweep_runs_exactly_the_chosen_configuration(text_sweep):
    config, result, _ = text_sweep
    output = CliRunner().invoke(app, ["best", "text", "--db", config.storage.study_db])
    assert output.exit_code == 0, output.output
    pasted = yaml.safe_load(output.output)
    assert {key: pasted[key] for key in ("method", "lora_alpha_ratio", "lora_targets", "batch_size", "warmup_ratio")} == \
        {"method": "lora", "lora_alpha_ratio": 4.0, "lora_targets": "attention", "batch_size": 16, "warmup_ratio": 0.1}
    assert "majority-class baseline (validation): val_f1_macro" in output.output

    folder = Path(config.storage.results_dir).parent / "pasted"
    folder.mkdir()
    space = {**pasted, "learning_rate": {"type": "categorical", "choices": [pasted["learning_rate"]]}}  # a sweep must search something
    again = load_sweep(_write_sweep(folder, "pasted", model=config.model, search_space=space, budget={"n_trials": 1, "max_concurrent": 1},
                                    data=config.data.model_dump(include={"source", "validation", "test", "max_length"})))
    run_sweep(again)
    _, _, chosen_runs = mlflow_runs(config)
    _, _, pasted_runs = mlflow_runs(again)
    chosen = next(run for run in chosen_runs if run.data.tags["hpo.role"] == "search" and run.data.tags["hpo.optuna_trial_number"] == str(result.answer["trial"]))
    (rerun,) = pasted_runs
    assert rerun.data.params == chosen.data.params


# ---- text generation ----


@pytest.fixture(scope="module")
def sampling_gpt2(tmp_path_factory):
    """The tiny GPT-2 of tests/test_text_generation.py, saved with a generation config that samples
    256 new tokens (as instruction-tuned models ship theirs)."""
    from tests.test_text_generation import _save_tiny

    folder = _save_tiny(tmp_path_factory.mktemp("sampling-gpt2"), "gpt2")
    from transformers import GenerationConfig

    GenerationConfig(do_sample=True, temperature=0.9, top_p=0.9, max_new_tokens=256, bos_token_id=2, eos_token_id=3, pad_token_id=0).save_pretrained(folder)
    return folder


def test_the_generator_is_greedy_and_reads_long_and_empty_prompts_as_the_sweep_scored_them(tmp_path, sampling_gpt2, ray_session):
    from transformers import AutoTokenizer

    from tests.test_text_generation import WORDS as VOCAB_WORDS
    from tests.test_text_generation import make_pairs
    from trials.generation_metrics import generation_scores
    from trials.text_generation import encode_pairs, generate, prompt_responses

    pairs = make_pairs(120)
    test = pairs[100:] + [{"prompt": "repeat " + " ".join(VOCAB_WORDS * 12) + " :", "response": "red"}]  # 120 tokens: past the 64 positions
    for file, rows in (("train.jsonl", pairs[:84]), ("val.jsonl", pairs[84:100]), ("test.jsonl", test)):
        pd.DataFrame(rows).to_json(tmp_path / file, orient="records", lines=True)
    config = load_sweep(_write_sweep(
        tmp_path, "generation", task="text-generation", model=str(sampling_gpt2), objective={"metric": "val_loss", "mode": "min"},
        # a rate too small to unlearn the random weights: the model generates words (not the end-of-sequence token at once)
        search_space={"learning_rate": {"type": "float", "low": 1e-7, "high": 2e-7}}, registered_model="tiny-generator",
        data={"source": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "val.jsonl"), "test": str(tmp_path / "test.jsonl"),
              "max_length": 32, "max_new_tokens": 6, "generation_samples": 32},
    ))
    result = run_sweep(config)
    assert result.answer is not None and result.answer["registered"] == "tiny-generator/1", result.answer
    generator, served = _loaded(config.storage.mlflow, "tiny-generator/1")
    settings = generator.model.generation_config
    assert settings.do_sample is False and settings.max_new_tokens == 6 and settings.num_beams == 1

    prompts = [row["prompt"] for row in test]
    native = [generator(prompt, truncation=True, return_full_text=False)[0]["generated_text"].strip() for prompt in prompts]
    pyfunc = [text.strip() for text in served.predict(prompts)]
    assert native == pyfunc and sum(map(bool, native)) > len(native) // 2, native  # the model says something: the comparisons below mean something

    # The sweep's generation code (encode_pairs, generate) on the registered weights, one prompt at a time.
    tokenizer = AutoTokenizer.from_pretrained(sampling_gpt2)
    split = encode_pairs(tokenizer, prompt_responses(pd.DataFrame(test)), 32, 6)
    generated = generate(generator.model, split, np.arange(len(test)), batch_size=1, pad_id=0, eos_id=tokenizer.eos_token_id, max_new_tokens=6, device=torch.device("cpu"))
    assert native == [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    scores = generation_scores(native, [row["response"] for row in test])
    assert scores["val_token_f1"] == pytest.approx(result.answer["test"]["metrics"]["test_token_f1"])  # the sweep's test score of the same rows

    empty = generator("", truncation=True, return_full_text=False)[0]["generated_text"]
    assert isinstance(empty, str) and [text.strip() for text in served.predict([""])] == [empty.strip()]


# ---- image classification ----


def test_the_image_classifier_reads_large_images_as_the_sweep_scored_them(tmp_path, ray_session):
    from PIL import Image
    from sklearn.datasets import load_digits
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    model = tmp_path / "tiny-vit"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
                 add_pooling_layer=False).save_pretrained(model)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(model)
    classes = ("zero", "one", "two")
    digits = load_digits()
    rows = []
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        if target < len(classes):
            split = ("train", "train", "train", "validation", "test")[index % 5]
            size = 128 if split == "test" and index % 2 else 32  # test images up to 4x the model's image size
            path = tmp_path / f"{index:04d}.png"
            Image.fromarray((pixels * 15.9).astype(np.uint8), "L").resize((size, size), Image.BILINEAR).convert("RGB").save(path)
            rows.append({"path": path.name, "digit": classes[target], "split": split})
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "digits.csv", index=False)
    config = load_sweep(_write_sweep(
        tmp_path, "digits", task="image-classification", model=str(model), registered_model="tiny-digits", budget={"n_trials": 1, "max_concurrent": 1},
        search_space={"learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True}, "batch_size": 16},
        data={"source": str(tmp_path / "digits.csv"), "image_column": "path", "label_column": "digit", "split_column": "split"},
    ))
    result = run_sweep(config)
    assert result.answer is not None and result.answer["registered"] == "tiny-digits/1", result.answer
    classifier, served = _loaded(config.storage.mlflow, "tiny-digits/1")
    test = table[table["split"] == "test"]
    paths = [str(tmp_path / name) for name in test["path"]]
    labels = sorted(classes)
    native = [outputs[0]["label"] for outputs in classifier(paths)]
    pyfunc = served.predict(paths)
    assert native == [best["label"] for best in pyfunc[0]]  # one column per class, the most likely first
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(counts, ([labels.index(label) for label in test["digit"]], [labels.index(label) for label in native]), 1)
    assert counts.tolist() == result.answer["test"]["confusion"]
