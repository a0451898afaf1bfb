"""task: image-classification: images from a folder tree or a CSV of paths, preprocessed once,
a tiny random ViT (and ResNet) through the same fine-tuning loop, and a real sweep."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.trial import TrialState

from orchestrator.api import load_sweep, run_sweep
from orchestrator.errors import ConfigError
from orchestrator.run.runner import validate
from tests.conftest import mlflow_runs, registered_model
from trials.data import DataError
from trials.finetune import Hyperparameters, TrialData, TrialSettings, fine_tune
from trials.images import collate, flip_and_crop, images_in_folder, images_in_table, preprocess
from trials.model import apply_unfreeze_depth, count_trainable, encoder_layers, layer_count

CLASSES = ("zero", "one", "two")
IMAGE_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-3, "high": 5e-3, "log": True},
    "batch_size": 16,
    "unfreeze_depth": {"type": "int", "low": 0, "high": 2},
    "augment_prob": {"type": "float", "low": 0.0, "high": 0.5},
    "image_augment": {"type": "categorical", "choices": ["crop", "flip_crop"]},
}


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """scikit-learn's 8x8 digits 0-2 (about 540) upscaled to 32x32 PNGs, one folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits") / "images"
    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        if target < len(CLASSES):
            folder = root / CLASSES[target]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 15.9).astype(np.uint8), "L").resize((32, 32), Image.BILINEAR).save(folder / f"{index:04d}.png")
    return root


@pytest.fixture(scope="module")
def digits_csv(digits_folder):
    rows = [{"path": str(path.relative_to(digits_folder)), "digit": path.parent.name} for path in sorted(digits_folder.rglob("*.png"))]
    path = digits_folder / "labels.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 2-block ViT for 32x32 images (random weights) with its image processor, saved like a pre-trained model."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    folder = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_resnet(tmp_path_factory):
    """A 3-stage ResNet (random weights) and a ConvNeXt-style processor (resize 36, centre-crop 32)."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    folder = tmp_path_factory.mktemp("tiny-resnet")
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16], depths=[1, 1, 1])).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=32 / 36).save_pretrained(folder)
    return folder


def test_images_from_a_folder_tree_and_from_a_csv_agree(digits_folder, digits_csv):
    from_folder = images_in_folder(digits_folder)
    from_table = images_in_table(pd.read_csv(digits_csv), "path", "digit", digits_csv.parent)
    assert from_folder.label_names == from_table.label_names == sorted(CLASSES)
    assert len(from_folder.paths) == len(from_table.paths) > 500
    by_path = dict(zip(from_folder.paths, from_folder.labels.tolist(), strict=True))
    assert all(by_path[path] == label for path, label in zip(from_table.paths, from_table.labels.tolist(), strict=True))
    assert all(from_folder.label_names[label] == path.parent.name for path, label in zip(from_folder.paths, from_folder.labels, strict=True))


def test_bad_image_data_is_a_data_error(tmp_path, digits_csv):
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="only one class folder"):
        images_in_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="'empty' holds no images"):
        images_in_folder(tmp_path)
    frame = pd.read_csv(digits_csv)
    with pytest.raises(DataError, match="column 'image' is not in the data; its columns are \\['path', 'digit'\\]"):
        images_in_table(frame, "image", "digit", digits_csv.parent)
    with pytest.raises(DataError, match="does not exist; relative paths are read from"):
        images_in_table(frame, "path", "digit", tmp_path)


def test_preprocessing_keeps_uint8_pixels_and_collate_normalises(digits_folder, tiny_vit, tiny_resnet):
    from transformers import AutoImageProcessor

    images = images_in_folder(digits_folder).take(np.arange(20))
    split = preprocess(AutoImageProcessor.from_pretrained(tiny_vit), images)
    assert split.pixels.shape == (20, 3, 32, 32) and split.pixels.dtype == np.uint8
    assert split.mean == (0.5, 0.5, 0.5) and split.std == (0.5, 0.5, 0.5)
    batch = collate(split, np.arange(4))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["labels"].tolist() == images.labels[:4].tolist()
    assert -1.0 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1.0
    expected = split.pixels[:4].astype(np.float32) / 255 * 2 - 1
    assert np.allclose(batch["pixel_values"].numpy(), expected, atol=1e-5)
    cropped = preprocess(AutoImageProcessor.from_pretrained(tiny_resnet), images)  # resized to 36, centre-cropped to 32
    assert cropped.pixels.shape == (20, 3, 32, 32)


def test_flip_and_crop_keep_the_shape_and_do_what_they_say():
    rng = np.random.default_rng(0)
    image = np.arange(3 * 16 * 16, dtype=np.uint8).reshape(3, 16, 16)
    assert np.array_equal(flip_and_crop(image, 1.0, "flip", rng), image[:, :, ::-1])
    assert np.array_equal(flip_and_crop(image, 0.0, "flip_crop", rng), image)
    shifted = [flip_and_crop(image, 1.0, "crop", rng) for _ in range(10)]
    assert all(s.shape == image.shape for s in shifted) and any(not np.array_equal(s, image) for s in shifted)


def test_unfreeze_depth_counts_vit_blocks_and_cnn_stages(tiny_vit, tiny_resnet):
    from transformers import AutoConfig, AutoModelForImageClassification

    from trials.model import load_classifier

    vit = load_classifier(str(tiny_vit), list(CLASSES), auto_class=AutoModelForImageClassification)
    blocks = encoder_layers(vit)
    assert layer_count(AutoConfig.from_pretrained(tiny_vit)) == len(blocks) == 2
    apply_unfreeze_depth(vit, 1)
    assert all(p.requires_grad for p in blocks[1].parameters()) and not any(p.requires_grad for p in blocks[0].parameters())
    assert not any(p.requires_grad for p in vit.vit.embeddings.parameters())
    assert all(p.requires_grad for p in [*vit.vit.layernorm.parameters(), *vit.classifier.parameters()])  # the final norm trains with the head

    resnet = load_classifier(str(tiny_resnet), list(CLASSES), auto_class=AutoModelForImageClassification)
    assert layer_count(AutoConfig.from_pretrained(tiny_resnet)) == 3
    assert encoder_layers(resnet) is resnet.resnet.encoder.stages
    apply_unfreeze_depth(resnet, 0)
    head = sum(p.numel() for p in resnet.classifier.parameters())
    assert count_trainable(resnet) == head
    apply_unfreeze_depth(resnet, 1)
    assert count_trainable(resnet) == head + sum(p.numel() for p in resnet.resnet.encoder.stages[2].parameters())


ON_CUDA = pytest.param(True, id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"))


@pytest.mark.parametrize("use_gpu", [pytest.param(False, id="cpu"), ON_CUDA])
@pytest.mark.parametrize("model", ["tiny_vit", "tiny_resnet"])
def test_vision_models_train_in_the_shared_loop(digits_folder, model, use_gpu, request):
    from transformers import AutoImageProcessor

    from trials.data import split

    folder = request.getfixturevalue(model)
    images = images_in_folder(digits_folder)
    train, val = split(images, 200, 100, seed=0)
    processor = AutoImageProcessor.from_pretrained(folder)
    data = TrialData(preprocess(processor, train), preprocess(processor, val))
    settings = TrialSettings(str(folder), images.label_names, 0, max_epochs=2, objective="val_f1_macro", mode="max",
                             num_threads=1, task="image-classification", use_gpu=use_gpu)
    reports = []
    fine_tune(settings, Hyperparameters(learning_rate=3e-3, batch_size=16, augment_prob=0.3, class_balance="oversample"), data, reports.append)
    assert [r["epoch"] for r in reports] == [1, 2] and reports[-1]["is_final"] == 1
    assert {"val_loss", "val_accuracy", "val_f1_macro", "train_loss"} <= set(reports[-1])
    assert {f"val_f1_class.{name}" for name in CLASSES} <= set(reports[-1])


def _image_sweep(write_sweep, model, source, name="digits", data=None, **overrides):
    path = write_sweep(name=name, data=None, **{"task": "image-classification", "model": str(model), "search_space": IMAGE_SPACE, **overrides})
    sweep = yaml.safe_load(path.read_text())
    sweep["data"] = {"source": str(source), "train_size": 240, "val_size": 90, **(data or {})}
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def test_preset_and_csv_sweep_validate(write_sweep, tiny_vit, digits_csv):
    prepared = validate(load_sweep(_image_sweep(write_sweep, tiny_vit, digits_csv, data={"image_column": "path", "label_column": "digit"})))
    assert prepared.label_names == sorted(CLASSES) and prepared.data.train.pixels.shape == (240, 3, 32, 32)
    assert prepared.baseline["val_accuracy"] < 0.5
    preset = load_sweep(_image_sweep(write_sweep, tiny_vit, digits_csv, name="preset", search_space="image_classification"))
    assert {"augment_prob", "image_augment", "unfreeze_depth"} <= set(preset.search_space.params)


@pytest.mark.parametrize("change, field, fix", [
    (lambda tmp, csv, bert: {"data": {"source": str(tmp)}}, "data.source", "no class folders"),
    (lambda tmp, csv, bert: {"data": {"source": str(tmp / "nope")}}, "data.source", "no such folder or file"),
    (lambda tmp, csv, bert: {"data": {"source": str(csv)}}, "data.image_column", "column 'image' is not in the data"),
    (lambda tmp, csv, bert: {"data": {"source": str(csv), "image_column": "path", "label_column": "label"}}, "data.label_column", "its columns are"),
    (lambda tmp, csv, bert: {"model": str(bert)}, "model", "cannot classify images"),
    (lambda tmp, csv, bert: {"search_space": {**IMAGE_SPACE, "unfreeze_depth": {"type": "int", "low": 0, "high": 3}}}, "search_space.unfreeze_depth", "2 encoder layers"),
])
def test_bad_image_sweeps_fail_on_one_line_before_anything_is_written(write_sweep, tmp_path, tiny_vit, tiny_model, digits_csv, change, field, fix):
    (tmp_path / "empty-images").mkdir()
    overrides = change(tmp_path / "empty-images", digits_csv, tiny_model)
    data = overrides.pop("data", {})
    source = data.pop("source", digits_csv)
    path = _image_sweep(write_sweep, overrides.pop("model", tiny_vit), source, data=data, **overrides)
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(path))
    message = str(raised.value)
    assert message.startswith(f"{field}:") and fix in message and "\n" not in message, message
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists()


@pytest.mark.parametrize("change, field, fix", [
    ({"objective": {"metric": "val_noisy_accuracy", "mode": "max"}}, "objective.metric", "trials never report it; image-classification trials report val_loss"),
    ({"data_extra": {"text_column": "text"}}, "data.text_column", "text-classification reads it"),
    ({"search_space": {**IMAGE_SPACE, "momentum": 0.9}}, "search_space.momentum", "unknown parameter 'momentum'"),
    ({"search_space": {**IMAGE_SPACE, "image_augment": {"type": "categorical", "choices": ["rotate"]}}}, "search_space.image_augment", "image_augment takes flip, crop, flip_crop"),
])
def test_image_sweep_files_are_checked_for_the_task(write_sweep, tiny_vit, digits_csv, change, field, fix):
    change = dict(change)
    path = _image_sweep(write_sweep, tiny_vit, digits_csv, data=change.pop("data_extra", None), **change)
    with pytest.raises(ConfigError) as raised:
        load_sweep(path)
    assert str(raised.value).startswith(f"{field}:") and fix in str(raised.value), str(raised.value)


def test_image_augment_is_refused_for_text(write_sweep):
    from tests.conftest import TINY_SPACE

    with pytest.raises(ConfigError, match="^search_space.image_augment: unknown key: unknown parameter"):
        load_sweep(write_sweep(search_space={**TINY_SPACE, "image_augment": "flip"}))


@pytest.mark.slow
def test_image_classification_sweep_records_complete_trials(ray_session, write_sweep, tiny_vit, digits_folder):
    config = load_sweep(_image_sweep(write_sweep, tiny_vit, digits_folder, trial={"max_epochs": 2}, budget={"n_trials": 3, "max_concurrent": 2}))
    result = run_sweep(config)

    trials = optuna.load_study(study_name=config.name, storage=config.storage.study_db).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 and result.trials_this_run == {"COMPLETE": 3}
    for trial in trials:
        assert 1e-3 <= trial.params["learning_rate"] <= 5e-3 and 0 <= trial.params["unfreeze_depth"] <= 2
        assert 0.0 <= trial.params["augment_prob"] <= 0.5 and trial.params["image_augment"] in ("crop", "flip_crop")
        assert sorted(trial.intermediate_values) == [1, 2] and 0.0 <= trial.value <= 1.0
    client, parents, children = mlflow_runs(config)
    assert parents[0].data.params["task"] == "image-classification"
    assert len(children) == 3 and all(run.info.status == "FINISHED" for run in children)
    for run in children:
        assert {"val_f1_macro", "val_accuracy", "val_loss", "train_loss", "val_f1_class.zero"} <= set(run.data.metrics)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_f1_macro")] == [1, 2]


@pytest.mark.slow
def test_an_image_sweep_registers_an_image_classification_pipeline(ray_session, write_sweep, tiny_vit, digits_folder):
    from PIL import Image

    config = load_sweep(_image_sweep(write_sweep, tiny_vit, digits_folder, name="digits-registered", registered_model="tiny-digits",
                                     search_space={**IMAGE_SPACE, "unfreeze_depth": 2}, trial={"max_epochs": 1}, budget={"n_trials": 1, "max_concurrent": 1}))
    result = run_sweep(config)
    assert result.answer["registered"] == "tiny-digits/1", result.answer
    classifier = registered_model(config.storage.mlflow, "tiny-digits/1")
    assert type(classifier.model).__name__ == "ViTForImageClassification"
    image = Image.open(next((digits_folder / CLASSES[0]).iterdir())).convert("RGB")
    assert {output["label"] for output in classifier(image, top_k=3)} == set(CLASSES)
