"""The frozen-layer cache: trials that start from the cached hidden states of their frozen bottom
layers train and score like trials that run every layer (at dropout 0), fall back to running
every layer when the cache cannot apply, and say which in MLflow."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.api import load_sweep, run_sweep
from orchestrator.data.frozen_layers import frozen_boundaries, with_frozen_cache
from orchestrator.data.prepare import prepare
from orchestrator.data.trial_settings import trial_settings
from tests.conftest import encoded_tiny_data, mlflow_runs
from tests.test_image_classification import digits_folder, tiny_resnet, tiny_vit  # noqa: F401 (fixtures)
from trials import checkpoint, frozen_cache
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.model import FromBoundary, UnsplittableModelError, check_splittable, hidden_states_at, load_classifier
from trials.tasks import task_for

SAME = dict(rel=1e-4, abs=1e-5)  # float32 sums of the same numbers in another order


@pytest.fixture(scope="module")
def text(tiny_model, tiny_csv, tmp_path_factory):
    """(settings, data, data with the cache of boundaries 1 and 2) of the tiny BERT and data."""
    names, pad, data = encoded_tiny_data(tiny_model, tiny_csv, 160, 60, noisy_rate=0.1)
    settings = TrialSettings(str(tiny_model), names, pad, max_epochs=2, objective="val_f1_macro", mode="max", num_threads=1)
    model = load_classifier(str(tiny_model), names)
    splits = {"train": data.train, "val": data.val, "val_noisy": data.val_noisy}
    cache = frozen_cache.build(model, task_for(settings), splits, [1, 2], torch.device("cpu"), folder=tmp_path_factory.mktemp("frozen"))
    return settings, data, replace(data, frozen=cache)


def _run(settings, hyperparameters, data, resume=None):
    reports = []
    fine_tune(settings, hyperparameters, data, lambda metrics, **_: reports.append(metrics), resume=resume)
    return reports


def _scores(report: dict) -> dict:
    return {key: value for key, value in report.items() if key.startswith("val_") or key in ("train_loss", "trainable_params")}


@pytest.mark.parametrize("depth, method", [(0, "full"), (1, "full"), (1, "lora")])  # lora: adapters on the top layer only
def test_cached_and_uncached_trials_score_the_same_at_dropout_0(text, depth, method):
    settings, data, cached = text
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=depth, dropout=0.0, class_balance="oversample",
                                      method=method, lora_dropout=0.0)
    plain, fast = _run(settings, hyperparameters, data), _run(settings, hyperparameters, cached)
    assert plain[-1]["frozen_cache"].startswith("off:") and fast[-1]["frozen_cache"] == f"on: the bottom {2 - depth} of 2 layers from the cache"
    for before, after in zip(plain, fast, strict=True):
        assert _scores(after) == pytest.approx(_scores(before), **SAME)
    assert {"val_noisy_f1_macro", "val_f1_class.positive"} <= set(fast[-1])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_trial_builds_the_boundary_it_needs_when_none_is_built(text, tmp_path, method):
    """The first trial that needs a boundary builds it with the model it trains (adapters on the top layers for lora)."""
    settings, data, _ = text
    empty = replace(data, frozen=frozen_cache.FrozenCache(boundaries=(1, 2), layers=2, folder=str(tmp_path / "cache")))
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0, class_balance="oversample",
                                      method=method, lora_dropout=0.0)
    plain, fast = _run(settings, hyperparameters, data), _run(settings, hyperparameters, empty)
    assert fast[-1]["frozen_cache"] == "on: the bottom 1 of 2 layers from the cache" and empty.frozen.built() == [1]
    for before, after in zip(plain, fast, strict=True):
        assert _scores(after) == pytest.approx(_scores(before), **SAME)


def test_sub_epoch_evaluations_score_the_quick_subset_from_the_cache(text):
    settings, data, cached = text
    settings = replace(settings, evals_per_epoch=2, quick_val_size=20)
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=0, dropout=0.0)
    plain, fast = _run(settings, hyperparameters, data), _run(settings, hyperparameters, cached)
    assert [r.get("interim", 0) for r in fast] == [1, 0, 1, 0]
    for before, after in zip(plain, fast, strict=True):
        assert _scores(after) == pytest.approx(_scores(before), **SAME)


def test_a_restarted_cached_trial_continues_where_it_stopped(text):
    settings, _, cached = text
    settings = replace(settings, max_epochs=3, checkpoint=True)
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.1)
    saved = {}

    def report(metrics, checkpoint_dir=None):
        if checkpoint_dir is not None and metrics["epoch"] == 1:
            saved.update(checkpoint.load(checkpoint_dir))

    fine_tune(settings, hyperparameters, cached, report)
    whole = _run(settings, hyperparameters, cached)
    resumed = _run(settings, hyperparameters, cached, resume=saved)
    assert [r["epoch"] for r in resumed] == [2, 3] and resumed[-1]["frozen_cache"].startswith("on:")
    assert _scores(resumed[-1]) == pytest.approx(_scores(whole[-1]), **SAME)


def test_out_of_memory_retries_split_cached_batches_too(text, monkeypatch):
    import trials.finetune

    settings, _, cached = text
    hyperparameters = Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0)
    whole = _run(settings, hyperparameters, cached)
    real_forward = trials.finetune.forward_loss

    def at_most_4_rows(model, batch, loss_fn):
        if len(batch["labels"]) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_forward(model, batch, loss_fn)

    monkeypatch.setattr(trials.finetune, "forward_loss", at_most_4_rows)
    shrunk = _run(settings, hyperparameters, cached)
    assert [r["micro_batch_size"] for r in shrunk] == [4, 4] and shrunk[-1]["frozen_cache"].startswith("on:")
    assert shrunk[-1]["val_loss"] == pytest.approx(whole[-1]["val_loss"], rel=1e-3)


@pytest.mark.parametrize("change, reason", [
    ({"augment_prob": 0.2}, "off: augment_prob=0.2 changes the training inputs every epoch"),
    ({"unfreeze_depth": 2}, "off: unfreeze_depth trains every layer"),
    ({"unfreeze_depth": None}, "off: unfreeze_depth trains every layer"),
    ({"unfreeze_depth": 2, "unfreeze_every": 1}, "on: the bottom 1 of 2 layers from the cache"),  # one epoch: head and top layer only
    ({"unfreeze_depth": 2, "method": "lora"}, "off: unfreeze_depth trains every layer"),  # adapters on every layer
])
def test_trials_the_cache_cannot_serve_run_every_layer_and_say_why(text, change, reason):
    settings, _, cached = text
    reports = _run(replace(settings, max_epochs=1), Hyperparameters(learning_rate=5e-3, batch_size=16, **change), cached)
    assert reports[-1]["frozen_cache"] == reason


def test_gradual_unfreezing_starts_below_every_layer_it_ever_trains():
    cache = frozen_cache.FrozenCache(boundaries=(2, 4, 5, 6), layers=6, folder="unused")
    plan = lambda **change: frozen_cache.plan(cache, Hyperparameters(**change), change.get("unfreeze_depth", 6), 6, max_epochs=2)  # noqa: E731
    assert plan(unfreeze_depth=4, unfreeze_every=1)[0] == 4  # head + 2 layers by epoch 2: the bottom 4 stay frozen
    assert plan(unfreeze_depth=3)[0] == 2  # no boundary 3 cached: start lower, and run layer 3 frozen
    assert plan(unfreeze_depth=6, unfreeze_every=2)[0] == 5  # full depth, but only the top layer is reached
    assert plan(unfreeze_depth=5)[1] == "off: no cached boundary at or below layer 1 (cached: 2, 4, 5, 6)"
    assert plan(unfreeze_depth=6, unfreeze_every=1)[1] == "on: the bottom 4 of 6 layers from the cache"  # head + 2 layers by epoch 2
    late = frozen_cache.plan(cache, Hyperparameters(unfreeze_depth=2, unfreeze_every=1), 2, 6, max_epochs=2)
    assert late[0] == 4
    every = frozen_cache.plan(cache, Hyperparameters(unfreeze_depth=6, unfreeze_every=1), 6, 6, max_epochs=8)
    assert every == (None, "off: unfreeze_depth trains every layer by the last epoch (gradual unfreezing)")


def test_boundaries_are_those_the_search_space_can_ask_for(write_sweep):
    searched = {"learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2}}
    space = lambda depth: load_sweep(write_sweep(search_space={**searched, "unfreeze_depth": depth})).search_space  # noqa: E731
    assert frozen_boundaries(space({"type": "int", "low": 0, "high": 6}), 6) == [1, 2, 3, 4, 5, 6]
    assert frozen_boundaries(space({"type": "categorical", "choices": [0, 3, 6]}), 6) == [3, 6]
    assert frozen_boundaries(space(2), 6) == [4]
    assert frozen_boundaries(load_sweep(write_sweep(search_space=searched)).search_space, 6) == []


def test_no_boundary_is_built_before_a_trial_needs_it_and_each_once(write_sweep, monkeypatch):
    """The driver plans the cache (a few validation rows run from each boundary) and builds none; the first
    trial that starts from a boundary builds that one, into the folder, and later trials read it."""
    space = {"learning_rate": 5.0e-3, "batch_size": 16, "dropout": 0.0, "unfreeze_depth": {"type": "int", "low": 0, "high": 2}}
    config = load_sweep(write_sweep(search_space=space, trial={"max_epochs": 1}))
    real_states_of = frozen_cache._states_of
    monkeypatch.setattr(frozen_cache, "_states_of", lambda *args, **kwargs: pytest.fail("a boundary was built before any trial"))
    prepared, note = with_frozen_cache(prepare(config))
    cache = prepared.data.frozen
    assert note is None and cache.boundaries == (1, 2) and cache.built() == []
    assert cache.summary().startswith("boundaries 1,2 of 2 layers; each built when the first trial that needs it starts, in ")
    assert Path(cache.folder).parent == Path(config.storage.results_dir).resolve() / "frozen-cache"

    builds = []
    monkeypatch.setattr(frozen_cache, "_states_of", lambda model, task, split, boundaries, **rest: builds.append(list(boundaries))
                        or real_states_of(model, task, split, boundaries, **rest))
    settings = replace(trial_settings(prepared, keep_best_model=False), num_threads=1)
    first = _run(settings, Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0), prepared.data)
    assert first[-1]["frozen_cache"] == "on: the bottom 1 of 2 layers from the cache" and cache.built() == [1]
    assert len(builds) >= 2 and {tuple(b) for b in builds} == {(1,)}  # each split once, at boundary 1 only
    built = len(builds)
    again = _run(settings, Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0), prepared.data)
    assert len(builds) == built and _scores(again[-1]) == pytest.approx(_scores(first[-1]), **SAME)  # read, not rebuilt
    off = replace(prepared.data, frozen=None)
    plain = _run(settings, Hyperparameters(learning_rate=5e-3, batch_size=16, unfreeze_depth=1, dropout=0.0), off)
    assert _scores(plain[-1]) == pytest.approx(_scores(first[-1]), **SAME)
    replanned, _ = with_frozen_cache(prepare(config))  # a continued study finds what the last run built
    assert replanned.data.frozen.folder == cache.folder and replanned.data.frozen.built() == [1]


def test_trials_needing_one_boundary_at_once_build_it_once(text, tmp_path, monkeypatch):
    """Trials on one node lock the boundary's file in the cache folder: one builds, the others wait and read."""
    import threading

    settings, data, _ = text
    cache = frozen_cache.FrozenCache(boundaries=(1, 2), layers=2, folder=str(tmp_path / "cache"))
    model = load_classifier(settings.model_path, settings.label_names).eval()
    splits = {"train": data.train, "val": data.val, "val_noisy": data.val_noisy}
    real_build, builds = frozen_cache._build_into, []

    def slow_build(*args, **kwargs):
        builds.append(args[0].name)
        time.sleep(0.5)  # long enough for every thread to reach the lock while the first builds
        return real_build(*args, **kwargs)

    monkeypatch.setattr(frozen_cache, "_build_into", slow_build)
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(cache.states(1, model, task_for(settings), splits, device=torch.device("cpu"))))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == ["boundary-1"] and len(got) == 4 and cache.built() == [1]
    assert all(np.array_equal(states.train.states, got[0].train.states) for states in got)
    assert not list((tmp_path / "cache").glob("*.partial-*"))


def test_the_size_check_falls_back_before_any_compute(write_sweep, monkeypatch):
    prepared = prepare(load_sweep(write_sweep(trial={"cache_frozen_max_gb": 1.0e-6})))
    monkeypatch.setattr(frozen_cache, "build", lambda *args, **kwargs: pytest.fail("the cache was computed"))
    prepared, note = with_frozen_cache(prepared)
    assert note.startswith("frozen-layer cache off: it would take 0.00") and "over the limit of 0.00 GB; raise trial.cache_frozen_max_gb" in note
    assert "\n" not in note and prepared.data.frozen.off in note


def test_cache_frozen_off_builds_nothing_and_says_so(write_sweep):
    prepared, note = with_frozen_cache(prepare(load_sweep(write_sweep(trial={"cache_frozen": "off"}))))
    assert note is None and prepared.data.frozen.summary() == "off: trial.cache_frozen is off"


def test_cache_frozen_takes_auto_or_off(write_sweep):
    from orchestrator.errors import ConfigError

    with pytest.raises(ConfigError, match="trial.cache_frozen"):
        load_sweep(write_sweep(trial={"cache_frozen": "on"}))


def test_vit_runs_from_the_cache_like_the_whole_model(digits_folder, tiny_vit, tmp_path):  # noqa: F811
    from transformers import AutoImageProcessor

    from trials.data import split
    from trials.images import images_in_folder, preprocess

    images = images_in_folder(digits_folder)
    train, val = split(images, 96, 48, seed=0)
    processor = AutoImageProcessor.from_pretrained(tiny_vit)
    data = TrialData(preprocess(processor, train), preprocess(processor, val))
    settings = TrialSettings(str(tiny_vit), images.label_names, 0, max_epochs=1, objective="val_f1_macro", mode="max",
                             num_threads=1, task="image-classification")
    model = load_classifier(str(tiny_vit), images.label_names, auto_class=__import__("transformers").AutoModelForImageClassification)
    cache = frozen_cache.build(model, task_for(settings), {"train": data.train, "val": data.val}, [1, 2], torch.device("cpu"), folder=tmp_path)
    assert set(np.unique(frozen_cache._load(tmp_path / "boundary-1").val.lengths)) == {17}  # 16 patches and the class token
    hyperparameters = Hyperparameters(learning_rate=3e-3, batch_size=16, unfreeze_depth=1, dropout=0.0)
    plain, fast = _run(settings, hyperparameters, data), _run(settings, hyperparameters, replace(data, frozen=cache))
    assert fast[-1]["frozen_cache"].startswith("on:")
    assert _scores(fast[-1]) == pytest.approx(_scores(plain[-1]), **SAME)


def test_a_convolutional_network_cannot_be_split(tiny_resnet):  # noqa: F811
    from transformers import AutoModelForImageClassification

    model = load_classifier(str(tiny_resnet), ["a", "b"], auto_class=AutoModelForImageClassification)
    with pytest.raises(UnsplittableModelError, match="ResNetForImageClassification has no embeddings module"):
        check_splittable(model)


def test_a_resnet_sweep_runs_without_the_cache_and_says_which_model(write_sweep, tiny_resnet, digits_folder):  # noqa: F811
    from tests.test_image_classification import _image_sweep

    prepared, note = with_frozen_cache(prepare(load_sweep(_image_sweep(write_sweep, tiny_resnet, digits_folder))))
    assert note.startswith("frozen-layer cache off: ResNetForImageClassification has no embeddings module ahead of its layer stack")
    assert note.endswith("; trials run every layer") and prepared.data.frozen.off in note


def test_a_model_that_does_not_reproduce_its_outputs_from_a_boundary_runs_without_the_cache(write_sweep, monkeypatch):
    import orchestrator.data.frozen_layers

    class Shifted(orchestrator.data.frozen_layers.FromBoundary):
        def forward(self, **inputs):
            outputs = super().forward(**inputs)
            outputs.logits = outputs.logits + 1.0
            return outputs

    monkeypatch.setattr(orchestrator.data.frozen_layers, "FromBoundary", Shifted)
    prepared, note = with_frozen_cache(prepare(load_sweep(write_sweep())))
    assert note.startswith("frozen-layer cache off: BertForSequenceClassification run from its layer 1 does not reproduce its outputs (largest difference 1")
    assert prepared.data.frozen.boundaries == ()


def test_a_sweep_tags_each_trial_with_its_cache_use(ray_session, write_sweep):
    space = {"learning_rate": 5.0e-3, "batch_size": 16, "unfreeze_depth": {"type": "int", "low": 1, "high": 2},
             "augment_prob": {"type": "categorical", "choices": [0.0, 0.2]}}
    config = load_sweep(write_sweep(search_space=space, trial={"max_epochs": 1}, budget={"n_trials": 4, "max_concurrent": 2},
                                    sampler={"name": "grid"}))
    run_sweep(config)
    _, parents, children = mlflow_runs(config)
    assert parents[0].data.params["trial.cache_frozen"].startswith("boundaries 1 of 2 layers; ")
    tags = {(int(run.data.params["unfreeze_depth"]), float(run.data.params["augment_prob"])): run.data.tags["hpo.frozen_cache"] for run in children}
    assert tags == {
        (1, 0.0): "on: the bottom 1 of 2 layers from the cache",
        (1, 0.2): "off: augment_prob=0.2 changes the training inputs every epoch",
        (2, 0.0): "off: unfreeze_depth trains every layer",
        (2, 0.2): "off: augment_prob=0.2 changes the training inputs every epoch",
    }


def test_a_training_function_of_your_own_reports_that_it_runs_uncached(monkeypatch):
    from trials import report

    sent = []
    monkeypatch.setattr(report, "ray_tune_report", lambda metrics, *args: sent.append(metrics))
    with report.user_trial(2, ("score",), "max", None) as session:
        report.epoch({"score": 0.5})
        session.close(None)
    assert [m["frozen_cache"] for m in sent] == ["off: trial.function trains its own model"] * 2  # the epoch, then it again as final


@pytest.mark.parametrize("family", ["Bert", "Roberta", "DistilBert"])
def test_text_encoders_run_from_any_boundary_like_the_whole_model(family):
    import transformers

    size = dict(dim=32, n_layers=3, n_heads=2, hidden_dim=64) if family == "DistilBert" else \
        dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    config = getattr(transformers, f"{family}Config")(vocab_size=50, max_position_embeddings=40, num_labels=3, **size)
    torch.manual_seed(0)
    model = getattr(transformers, f"{family}ForSequenceClassification")(config).eval()
    mask = torch.tensor([[1] * 9 + [0] * 3, [1] * 12, [1] * 4 + [0] * 8])
    inputs = {"input_ids": torch.randint(5, 50, (3, 12)) * mask + (1 - mask), "attention_mask": mask}
    with torch.inference_mode():
        expected = model(**inputs).logits
        states = hidden_states_at(model, inputs, [0, 1, 2, 3])
        for boundary, hidden in states.items():
            got = FromBoundary(model, boundary)(inputs_embeds=hidden, attention_mask=mask).logits
            assert got.numpy() == pytest.approx(expected.numpy(), abs=1e-5), boundary


def test_a_model_with_a_step_between_embeddings_and_layers_runs_without_the_cache(write_sweep, tiny_model, tmp_path):
    """ELECTRA with a smaller embedding size projects the embeddings up before the first layer:
    the cached states cannot go in where the embeddings' output goes."""
    import shutil

    from transformers import ElectraConfig, ElectraModel

    folder = tmp_path / "electra"
    ElectraModel(ElectraConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, folder / name)
    prepared, note = with_frozen_cache(prepare(load_sweep(write_sweep(model=str(folder)))))
    assert note.startswith("frozen-layer cache off: ElectraForSequenceClassification cannot run from a layer boundary (RuntimeError: ")
    assert "\n" not in note and prepared.data.frozen.boundaries == ()


@pytest.mark.slow
def test_the_benchmark_smoke_run_prints_both_tables():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "bench/frozen_cache.py", "--smoke"], cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["0", "6", "off", "auto"]  # depths 0 and 6, then the sweep pair
    assert "on: the bottom 6 of 6 layers from the cache" in done.stdout and "off: unfreeze_depth trains every layer" in done.stdout
