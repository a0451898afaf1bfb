"""Sweep-file validation: each malformed file gives its specific one-line error, and nothing is written."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import ConfigError
from orchestrator.run.ray_session import check_ray_address
from orchestrator.run.runner import validate
from orchestrator.sweep.config import load_sweep, parse_sweep
from trials.hyperparameters import CHOICES, DOMAINS, HYPERPARAMETER_NAMES, Hyperparameters

runner = CliRunner()


def _edit(path, change):
    sweep = yaml.safe_load(path.read_text())
    change(sweep)
    path.write_text(yaml.safe_dump(sweep))
    return path


CASES = [
    ("unknown top-level key", lambda s: s.update(epochs=3), "epochs", "unknown key"),
    ("unknown nested key", lambda s: s["data"].update(max_len=64), "data.max_len", "unknown key: did you mean 'max_length'?"),
    ("unknown key, nothing close", lambda s: s["budget"].update(epochs=3), "budget.epochs", "valid keys: n_trials, max_concurrent"),
    ("misspelt top-level key", lambda s: s.update(serach_space=s.pop("search_space")), "serach_space", "unknown key: did you mean 'search_space'?"),
    ("misspelt parameter key", lambda s: s["search_space"].update(dropout={"type": "float", "low": 0.0, "hihg": 0.2}), "search_space.dropout.hihg", "did you mean 'high'?"),
    ("wrong type", lambda s: s["budget"].update(n_trials="many"), "budget.n_trials", "give a whole number, e.g. n_trials: 8"),
    ("fraction for a count", lambda s: s["budget"].update(n_trials=2.5), "budget.n_trials", "give a whole number"),
    ("not a number", lambda s: s["resources"].update(cpu="lots"), "resources.cpu", "give a number, e.g. cpu: 1.0"),
    ("not a boolean", lambda s: s["trial"].update(checkpoint="maybe"), "trial.checkpoint", "give true or false"),
    ("not a list", lambda s: s.update(seed_trials="best"), "seed_trials", "give a YAML list, e.g. seed_trials: [{"),
    ("section given as a name", lambda s: s.update(scheduler="asha"), "scheduler", "give a mapping of its keys, e.g. scheduler: {name: asha}"),
    ("zero trials", lambda s: s["budget"].update(n_trials=0), "budget.n_trials", "give 1 or more, e.g. n_trials: 8"),
    ("missing model", lambda s: s.pop("model"), "model", "is missing"),
    ("missing name", lambda s: s.pop("name"), "name", "is missing: this key is required; add it, e.g. name: tweets-minilm"),
    ("bad study name", lambda s: s.update(name="my study!"), "name", "use letters, digits, '.', '_' and '-'"),
    ("unknown metric", lambda s: s["objective"].update(metric="f1"), "objective.metric", "val_f1_macro"),
    ("bad mode", lambda s: s["objective"].update(mode="maximize"), "objective.mode", "'max' or 'min'"),
    ("unknown sampler", lambda s: s["sampler"].update(name="bayes"), "sampler.name", "valid names are cmaes, gp, grid, nsga2, qmc, random, tpe"),
    ("unknown scheduler", lambda s: s["scheduler"].update(name="pbt"), "scheduler.name", "fifo"),
    ("low above high", lambda s: s["search_space"].update(dropout={"type": "float", "low": 0.5, "high": 0.1}), "search_space.dropout", "swap them"),
    ("log with zero low", lambda s: s["search_space"].update(learning_rate={"type": "float", "low": 0, "high": 1, "log": True}), "search_space.learning_rate", "log scale needs low > 0"),
    ("empty choices", lambda s: s["search_space"].update(batch_size={"type": "categorical", "choices": []}), "search_space.batch_size", "choices is empty"),
    ("unknown parameter type", lambda s: s["search_space"].update(dropout={"type": "uniform", "low": 0, "high": 1}), "search_space.dropout", "type 'uniform' is not one of 'float', 'int', 'categorical', e.g. dropout: {type: float"),
    ("parameter without a type", lambda s: s["search_space"].update(dropout={"low": 0, "high": 1}), "search_space.dropout", "give its type (float, int or categorical)"),
    ("unknown hyperparameter", lambda s: s["search_space"].update(lr={"type": "float", "low": 0.1, "high": 0.2}), "search_space.lr", "unknown parameter 'lr'"),
    ("missing search-space file", lambda s: s.update(search_space="nope.yaml"), "search_space", "no such file"),
    ("negative gpu", lambda s: s["resources"].update(gpu=-1), "resources.gpu", "give 0 or more"),
    ("zero memory", lambda s: s["resources"].update(memory_gb=0), "resources.memory_gb", "give more than 0"),
    ("registry name with a slash", lambda s: s.update(registered_model="team/model"), "registered_model", "cannot contain '/', ':' or '%'"),
    ("registered model with two objectives",
     lambda s: s.pop("objective") and s.update(registered_model="m", objectives=[{"metric": "val_f1_macro", "mode": "max"}, {"metric": "trainable_params", "mode": "min"}]),
     "registered_model", "needs one best trial"),
    ("unset env var in db url", lambda s: s["storage"].update(study_db="postgresql://u:${HPO_NOT_SET_ANYWHERE}@h/db"), "storage.study_db", "export it"),
    # Values that would fail every trial: each built-in hyperparameter's domain (trials.hyperparameters.DOMAINS)
    ("dropout range above 1", lambda s: s["search_space"].update(dropout={"type": "float", "low": 0.0, "high": 1.5}),
     "search_space.dropout", "dropout must be in [0, 1); lower high below 1"),
    ("dropout step reaching 1", lambda s: s["search_space"].update(dropout={"type": "float", "low": 0.0, "high": 1.1, "step": 0.25}),
     "search_space.dropout", "(with step 0.25 the highest value is 1); lower high below 1"),
    ("negative dropout choice", lambda s: s["search_space"].update(dropout={"type": "categorical", "choices": [None, -0.1]}),
     "search_space.dropout", "dropout must be in [0, 1); drop -0.1 from choices"),
    ("zero batch size", lambda s: s["search_space"].update(batch_size=0), "search_space.batch_size", "batch_size must be a whole number >= 1; change it"),
    ("zero batch size among choices", lambda s: s["search_space"].update(batch_size={"type": "categorical", "choices": [0, 8]}),
     "search_space.batch_size", "drop 0 from choices"),
    ("batch size range from 0", lambda s: s["search_space"].update(batch_size={"type": "int", "low": 0, "high": 16, "step": 8}),
     "search_space.batch_size", "raise low to 1"),
    ("batch size as a float range", lambda s: s["search_space"].update(batch_size={"type": "float", "low": 8, "high": 32}),
     "search_space.batch_size", "make it type: int"),
    ("batch size 16.0", lambda s: s["search_space"].update(batch_size=16.0), "search_space.batch_size", "write 16, not 16.0"),
    ("learning rate range from 0", lambda s: s["search_space"].update(learning_rate={"type": "float", "low": 0.0, "high": 1.0e-3}),
     "search_space.learning_rate", "learning_rate must be > 0; raise low above 0"),
    ("null learning rate", lambda s: s["search_space"].update(learning_rate=None), "search_space.learning_rate", "not null; change it, or remove it to use the default"),
    ("learning rate as a word", lambda s: s["search_space"].update(learning_rate="fast"), "search_space.learning_rate", "learning_rate must be > 0, not text"),
    ("negative weight decay", lambda s: s["search_space"].update(weight_decay=-0.01), "search_space.weight_decay", "weight_decay must be >= 0"),
    ("warmup ratio 1 among choices", lambda s: s["search_space"].update(warmup_ratio={"type": "categorical", "choices": [0.0, 1.0]}),
     "search_space.warmup_ratio", "warmup_ratio must be in [0, 1); drop 1.0 from choices"),
    ("label smoothing 1", lambda s: s["search_space"].update(label_smoothing=1.0), "search_space.label_smoothing", "in [0, 1)"),
    ("negative max_grad_norm", lambda s: s["search_space"].update(max_grad_norm={"type": "float", "low": -1.0, "high": 1.0}),
     "search_space.max_grad_norm", "max_grad_norm must be >= 0; raise low to 0"),
    ("layer_lr_decay above 1", lambda s: s["search_space"].update(layer_lr_decay={"type": "float", "low": 0.8, "high": 1.2}),
     "search_space.layer_lr_decay", "layer_lr_decay must be in (0, 1]; lower high to 1"),
    ("layer_lr_decay 0", lambda s: s["search_space"].update(layer_lr_decay=0), "search_space.layer_lr_decay", "in (0, 1]"),
    ("negative unfreeze_every", lambda s: s["search_space"].update(unfreeze_every={"type": "int", "low": -1, "high": 2}),
     "search_space.unfreeze_every", "unfreeze_every must be a whole number >= 0; raise low to 0"),
    ("fractional unfreeze_every", lambda s: s["search_space"].update(unfreeze_every=1.5), "search_space.unfreeze_every", "whole number"),
    ("negative unfreeze depth", lambda s: s["search_space"].update(unfreeze_depth={"type": "int", "low": -1, "high": 2}),
     "search_space.unfreeze_depth", "raise low to 0"),
    ("augment_prob above 1", lambda s: s["search_space"].update(augment_prob=1.5), "search_space.augment_prob", "augment_prob must be in [0, 1]"),
    ("infinite learning rate", lambda s: s["search_space"].update(learning_rate={"type": "float", "low": 1.0e-4, "high": float("inf")}),
     "search_space.learning_rate", "make high a finite number"),
    # Numbers that YAML read as text (1e-4 has no dot): each place a number goes, with how to write it
    ("fixed number as text", lambda s: s["search_space"].update(label_smoothing="1e-1"),
     "search_space.label_smoothing", "YAML reads 1e-1 as text; write 1.0e-1"),
    ("range low as text", lambda s: s["search_space"].update(learning_rate={"type": "float", "low": "1e-5", "high": 1.0e-3, "log": True}),
     "search_space.learning_rate.low", "YAML reads 1e-5 as text; write 1.0e-5"),
    ("int range high as text", lambda s: s["search_space"].update(unfreeze_depth={"type": "int", "low": 0, "high": "2e0"}),
     "search_space.unfreeze_depth.high", "YAML reads 2e0 as text; write 2"),
    ("choice as text", lambda s: s["search_space"].update(learning_rate={"type": "categorical", "choices": [3.0e-5, "1e-4"]}),
     "search_space.learning_rate", "YAML reads 1e-4 as text; write 1.0e-4"),
    ("whole-number choice as text", lambda s: s["search_space"].update(batch_size={"type": "categorical", "choices": [8, "1.6e1"]}),
     "search_space.batch_size", "YAML reads 1.6e1 as text; write 16"),
    ("quoted number", lambda s: s["search_space"].update(weight_decay="0.01"), "search_space.weight_decay", "write 0.01 without quotes"),
    ("condition bound as text", lambda s: s["search_space"].update(layer_lr_decay={"type": "float", "low": 0.5, "high": 1.0, "when": {"learning_rate": {"min": "1e-3"}}}),
     "search_space.layer_lr_decay.when", "YAML reads 1e-3 as text; write 1.0e-3"),
    ("seed point as text", lambda s: s.update(seed_trials=[{"learning_rate": 3.0e-3}, {"learning_rate": "3e-3"}]),
     "seed_trials[1].learning_rate", "YAML reads 3e-3 as text; write 3.0e-3"),
    ("seed point choice as text", lambda s: s.update(seed_trials=[{"batch_size": "8"}]), "seed_trials[0].batch_size", "write 8 without quotes"),
    ("integer setting as text", lambda s: s["budget"].update(n_trials="1e2"), "budget.n_trials", "YAML reads 1e2 as text; write 100"),
]


@pytest.mark.parametrize("change, field, fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_schema_errors_name_field_and_fix(write_sweep, tmp_path, change, field, fix):
    path = _edit(write_sweep(), change)
    with pytest.raises(ConfigError) as raised:
        load_sweep(path)
    message = str(raised.value)
    assert message.startswith(f"{field}:"), message
    assert fix in message
    assert "\n" not in message
    assert not any(pydantic in message for pydantic in ("Input should", "Input tag", "String should match", "more problem")), message
    assert not (tmp_path / "study.db").exists()


PREFLIGHT_CASES = [
    ("missing data file", lambda s: s["data"].update(source="/nonexistent/data.csv"), "data.source", "no such file"),
    ("missing text column", lambda s: s["data"].update(text_column="tweet"), "data.text_column", "columns are"),
    ("missing label column", lambda s: s["data"].update(label_column="sentiment"), "data.label_column", "columns are"),
    ("too many rows asked", lambda s: s["data"].update(train_size=100000), "data.train_size", "usable rows"),
    ("missing model folder", lambda s: s.update(model="/nonexistent/model"), "model", "not a local folder"),
    ("unfreeze deeper than model", lambda s: s["search_space"].update(unfreeze_depth={"type": "int", "low": 0, "high": 12}), "search_space.unfreeze_depth", "2 encoder layers"),
    ("unknown bundled model", lambda s: s.update(model="bundled:gpt5"), "model", "bundled:minilm-l6"),
    ("missing db folder", lambda s: s["storage"].update(study_db="sqlite:////nonexistent/dir/hpo.db"), "storage.study_db", "does not exist"),
    ("unreachable postgres", lambda s: s["storage"].update(study_db="postgresql+psycopg://hpo:s3cret@127.0.0.1:1/hpo"), "storage.study_db", "cannot connect"),
    ("not a database url", lambda s: s["storage"].update(study_db="hpo.db"), "storage.study_db", "not a database URL"),
    ("unreachable mlflow server", lambda s: s["storage"].update(mlflow="http://user:s3cret@127.0.0.1:1"), "storage.mlflow", "MLflow server not reachable"),
    ("unsupported db scheme", lambda s: s["storage"].update(study_db="mongodb://hpo:s3cret@h/db"), "storage.study_db", "unsupported database 'mongodb'"),
    ("missing mlflow db folder", lambda s: s["storage"].update(mlflow="sqlite:////nonexistent/dir/mlruns.db"), "storage.mlflow", "folder /nonexistent/dir does not exist"),
    ("mlflow db is a folder", lambda s: s["storage"].update(mlflow="sqlite:///" + s["storage"]["mlflow"][len("sqlite:///"):].rsplit("/", 1)[0]), "storage.mlflow", "is a folder"),
    ("unsupported mlflow scheme", lambda s: s["storage"].update(mlflow="ftp://u:s3cret@host/x"), "storage.mlflow", "unsupported scheme 'ftp'; MLflow tracking here is sqlite, postgresql"),
    ("mlflow file store", lambda s: s["storage"].update(mlflow="file:///tmp/mlruns"), "storage.mlflow", "file store is not supported"),
    ("mlflow plain path", lambda s: s["storage"].update(mlflow="mlruns"), "storage.mlflow", "use a database or a server"),
    ("unreachable mlflow database", lambda s: s["storage"].update(mlflow="postgresql+psycopg://hpo:s3cret@127.0.0.1:1/mlflow"), "storage.mlflow", "cannot connect"),
    ("results_dir is a file", lambda s: s["storage"].update(results_dir=s["data"]["source"]), "storage.results_dir", "it is a file, not a folder"),
    ("results_dir under a file", lambda s: s["storage"].update(results_dir=s["data"]["source"] + "/runs"), "storage.results_dir", "is a file, not a folder"),
    ("malformed cluster address", lambda s: s.update(cluster={"address": "head node:6379"}), "cluster.address", "not a Ray address; give auto"),
    ("cluster address without port", lambda s: s.update(cluster={"address": "head"}), "cluster.address", "HOST:6379"),
    ("dashboard url as cluster address", lambda s: s.update(cluster={"address": "http://head:8265"}), "cluster.address", "web address"),
    ("unknown cluster address scheme", lambda s: s.update(cluster={"address": "grpc://head:10001"}), "cluster.address", "unsupported scheme 'grpc'"),
    ("more cpus than this machine", lambda s: s["resources"].update(cpu=4096), "resources.cpu", "this machine has"),
    ("more gpus than this machine", lambda s: s["resources"].update(gpu=64), "resources.gpu", "this machine has"),
    ("more memory than this machine", lambda s: s["resources"].update(memory_gb=10**7), "resources.memory_gb", "GiB of memory"),
]


@pytest.fixture
def no_ray_in_this_process(monkeypatch):
    """validate checks resources against a Ray this process joined; other tests' session Ray must not be the machine."""
    import sys

    if "ray" in sys.modules:
        monkeypatch.setattr(sys.modules["ray"], "is_initialized", lambda: False)


@pytest.mark.parametrize("change, field, fix", [c[1:] for c in PREFLIGHT_CASES], ids=[c[0] for c in PREFLIGHT_CASES])
def test_preflight_errors_before_anything_is_written(write_sweep, tmp_path, change, field, fix, no_ray_in_this_process):
    path = _edit(write_sweep(), change)
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(path))
    message = str(raised.value)
    assert message.startswith(f"{field}:"), message
    assert fix in message
    assert "s3cret" not in message and "\n" not in message
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("address", [None, "auto", "local", "10.0.0.5:6379", "head.internal:6379", "[::1]:6379", "ray://head:10001", "ray://head"])
def test_ray_addresses_that_ray_accepts(address):
    check_ray_address(address, "cluster.address")


@pytest.mark.parametrize("address", ["", "head", "head:", "head:99999", "head:port", "head node:6379", "ray://", "ray://:10001",
                                     "http://head:8265", "https://head", "grpc://head:1", "head:6379/path"])
def test_malformed_ray_addresses(address):
    with pytest.raises(ConfigError, match="^--ray-address: .* is invalid: .*ray://HOST:10001"):
        check_ray_address(address, "--ray-address")


def test_a_cluster_is_checked_when_joined_not_by_validate(write_sweep, tmp_path, no_ray_in_this_process):
    """With cluster.address set, the nodes are unknown until `hpo run` joins: validate leaves resources to it."""
    validate(load_sweep(write_sweep(cluster={"address": "127.0.0.1:1"}, resources={"cpu": 4096, "gpu": 64})))
    assert not (tmp_path / "study.db").exists()


def _model_folder(tiny_model, tmp_path, change):
    """A copy of the tiny model, changed by ``change(folder)``."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    change(folder)
    return folder


def _no_weights(folder):
    (folder / "model.safetensors").unlink()


def _tf_weights_only(folder):
    (folder / "model.safetensors").rename(folder / "tf_model.h5")


def _set_model_type(model_type):
    def change(folder):
        settings = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**settings, "model_type": model_type}))
    return change


MODEL_FOLDER_CASES = [
    ("config.json not JSON", lambda folder: (folder / "config.json").write_text("{'hidden_size': 32,"), "config.json is not valid JSON"),
    ("config.json not an object", lambda folder: (folder / "config.json").write_text("[1, 2]"), "holds no JSON object"),
    ("config without weights", _no_weights,
     "the folder has config.json but no weights (model.safetensors or pytorch_model.bin); save the model with save_pretrained"),
    ("TensorFlow weights only", _tf_weights_only, "no weights (model.safetensors or pytorch_model.bin); from_pretrained does not load tf_model.h5"),
    ("unknown model type", _set_model_type("bertoid"), "model_type 'bertoid', which transformers"),
]


@pytest.mark.parametrize("change, fix", [c[1:] for c in MODEL_FOLDER_CASES], ids=[c[0] for c in MODEL_FOLDER_CASES])
def test_a_model_folder_trials_cannot_load_is_refused(write_sweep, tiny_model, tmp_path, change, fix):
    folder = _model_folder(tiny_model, tmp_path, change)
    with pytest.raises(ConfigError) as raised:
        validate(load_sweep(write_sweep(model=str(folder))))
    message = str(raised.value)
    assert message.startswith(f"model: {str(folder)!r} is invalid: "), message
    assert fix in message and "\n" not in message
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists()


def test_sharded_weights_are_weights(write_sweep, tiny_model, tmp_path):
    def shard(folder):
        (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
        (folder / "model.safetensors.index.json").write_text('{"metadata": {}, "weight_map": {}}')

    validate(load_sweep(write_sweep(model=str(_model_folder(tiny_model, tmp_path, shard)))))


def test_every_built_in_hyperparameter_has_a_domain_or_choices():
    assert set(DOMAINS) | set(CHOICES) == set(HYPERPARAMETER_NAMES) and not set(DOMAINS) & set(CHOICES)
    defaults = Hyperparameters()
    for name, domain in DOMAINS.items():
        value = getattr(defaults, name)
        assert value in domain or value is None and domain.nullable, name


@pytest.mark.parametrize("values, problem", [
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
    ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
    ({"learning_rate": "1e-4"}, "learning_rate must be > 0, got '1e-4'"),
    ({"unfreeze_depth": 2.0}, "unfreeze_depth must be a whole number >= 0, got 2.0"),
])
def test_a_trial_refuses_a_value_outside_the_domain(values, problem):
    """The same rule on the worker, should a value reach a trial some other way (an old queued trial)."""
    with pytest.raises(ValueError, match=re.escape(problem)):
        Hyperparameters.from_mapping(values)
    assert Hyperparameters.from_mapping({"dropout": None, "unfreeze_depth": None, "max_grad_norm": 0.0}).max_grad_norm == 0.0


def test_the_unquoted_yaml_1_1_number_is_refused(write_sweep):
    """The real file: PyYAML reads 1e-4 (no dot) as a string, 1.0e-4 as a number."""
    path = write_sweep()
    text = path.read_text().replace("weight_decay: 0.01", "weight_decay: 1e-2")
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape("search_space.weight_decay: '1e-2' is invalid: YAML reads 1e-2 as text; write 1.0e-2")):
        load_sweep(path)
    path.write_text(text.replace("1e-2", "1.0e-2"))
    assert load_sweep(path).search_space.fixed["weight_decay"] == 0.01


def test_a_training_function_of_your_own_gets_the_text_check_but_not_the_domains(tmp_path):
    """Its parameters mean what the function makes of them; only numbers YAML read as text are refused."""
    def sweep(**space):
        return {"name": "own", "objective": {"metric": "score"}, "trial": {"function": "json:loads"},
                "search_space": {"x": {"type": "float", "low": -2.0, "high": 2.0}, **space}}

    config = parse_sweep(sweep(batch_size=0, dropout=1.5, tag="0.1"), tmp_path)
    assert config.search_space.fixed == {"batch_size": 0, "dropout": 1.5, "tag": "0.1"}
    for space, field in (({"lr": "1e-4"}, "search_space.lr"), ({"lr": {"type": "categorical", "choices": ["3e-5", "1e-4"]}}, "search_space.lr"),
                         ({"lr": {"type": "float", "low": "1e-5", "high": 1.0}}, "search_space.lr.low")):
        with pytest.raises(ConfigError) as raised:
            parse_sweep(sweep(**space), tmp_path)
        assert str(raised.value).startswith(f"{field}: ") and "as text; write " in str(raised.value)


CLI_REFUSED = [
    ("number as text", lambda path, folder: path.write_text(path.read_text().replace("weight_decay: 0.01", "weight_decay: 1e-2")),
     "error: search_space.weight_decay: '1e-2' is invalid: YAML reads 1e-2 as text; write 1.0e-2"),
    ("dropout above 1", lambda path, folder: _edit(path, lambda s: s["search_space"].update(dropout={"type": "float", "low": 0.0, "high": 1.5})),
     "error: search_space.dropout: {'type': 'float', 'low': 0.0, 'high': 1.5} is invalid: dropout must be in [0, 1); lower high below 1"),
    ("zero batch size", lambda path, folder: _edit(path, lambda s: s["search_space"].update(batch_size=0)),
     "error: search_space.batch_size: 0 is invalid: batch_size must be a whole number >= 1; change it, or remove it to use the default (32)"),
    ("seed point as text", lambda path, folder: _edit(path, lambda s: s.update(seed_trials=[{"learning_rate": "5e-3"}])),
     "error: seed_trials[0].learning_rate: '5e-3' is invalid: YAML reads 5e-3 as text; write 5.0e-3"),
    ("model without weights", lambda path, folder: _no_weights(folder),
     "the folder has config.json but no weights (model.safetensors or pytorch_model.bin); save the model with save_pretrained"),
    ("config.json not JSON", lambda path, folder: (folder / "config.json").write_text("not json"), "config.json is not valid JSON"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("change, line", [c[1:] for c in CLI_REFUSED], ids=[c[0] for c in CLI_REFUSED])
def test_validate_and_run_refuse_alike_and_write_nothing(write_sweep, tiny_model, tmp_path, command, change, line):
    folder = _model_folder(tiny_model, tmp_path, lambda folder: None)
    path = write_sweep(model=str(folder))
    change(path, folder)
    result = runner.invoke(app, [command, str(path)])
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and line in lines[0], result.output
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists() and not (tmp_path / "runs").exists()


def test_an_enqueued_number_as_text_is_refused(write_sweep, tmp_path):
    points = tmp_path / "points.yaml"
    points.write_text("- {learning_rate: 5.0e-3}\n- {learning_rate: 5e-3, batch_size: 8}\n")
    result = runner.invoke(app, ["run", str(write_sweep()), "--enqueue", str(points)])
    assert result.exit_code == 2, result.output
    assert "error: --enqueue[1].learning_rate: '5e-3' is invalid: YAML reads 5e-3 as text; write 5.0e-3" in result.output
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "mlruns.db").exists()


def test_empty_data_file_is_refused(write_sweep, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="data.source: .*the file is empty; give a CSV"):
        validate(load_sweep(write_sweep(data={"source": str(tmp_path / "empty.csv")})))


def test_single_class_data_is_refused(write_sweep, tmp_path):
    (tmp_path / "one.csv").write_text("text,label\n" + "good,pos\n" * 6)
    path = write_sweep(data={"source": str(tmp_path / "one.csv"), "train_size": 3, "val_size": 10})
    with pytest.raises(ConfigError, match="data.label_column: .*only one class"):
        validate(load_sweep(path))


def test_cli_validate_ok(write_sweep):
    result = runner.invoke(app, ["validate", str(write_sweep())])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "400 train / 100 val / 100 test" in result.output


def test_cli_config_error_is_one_line_exit_2_without_traceback(write_sweep, tmp_path):
    path = _edit(write_sweep(), lambda s: s["budget"].update(n_trials=-3))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: budget.n_trials: -3 is invalid: give 1 or more, e.g. n_trials: 8"]
    assert not (tmp_path / "study.db").exists()


def test_cli_json_error(write_sweep):
    path = _edit(write_sweep(), lambda s: s.update(model="/nonexistent"))
    result = runner.invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 2
    assert '"ok": false' in result.output and '"exit_code": 2' in result.output


def test_malformed_yaml_names_the_file_and_the_place(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\n  model: [unclosed\n")
    with pytest.raises(ConfigError) as raised:
        load_sweep(path)
    assert str(raised.value) == (f"<sweep file>: '{path}' is invalid: not valid YAML (line 2, column 8: mapping values are not allowed here); "
                                 "fix the syntax there")


def test_malformed_search_space_file_names_the_file(write_sweep, tmp_path):
    (tmp_path / "space.yaml").write_text("dropout: {type: float, low: 0\n  high: [1\n")
    with pytest.raises(ConfigError) as raised:
        load_sweep(write_sweep(search_space="space.yaml"))
    message = str(raised.value)
    assert message.startswith("search_space: 'space.yaml' is invalid: ") and f"{tmp_path / 'space.yaml'} is not valid YAML (line 2" in message
    assert "<unicode string>" not in message and "\n" not in message


def test_demo_sweep_file_is_valid():
    config = load_sweep("sweeps/demo.yaml")
    assert config.name == "tweets-minilm"
    assert set(config.search_space.params) >= {"learning_rate", "batch_size", "unfreeze_depth", "weight_decay", "dropout", "warmup_ratio", "label_smoothing"}


def test_local_gpus_are_counted_as_ray_would(monkeypatch):
    from orchestrator.run import targets
    from orchestrator.sweep.sweep_sections import Resources

    monkeypatch.setattr(targets, "local_gpu_count", lambda: 1)
    targets.check_fits_this_machine(Resources(cpu=1, gpu=1))
    with pytest.raises(ConfigError, match=r"^resources\.gpu: 2\.0 is invalid: this machine has 1 GPU and .*ask for at most 1 per trial"):
        targets.check_fits_this_machine(Resources(cpu=1, gpu=2))
    monkeypatch.setattr(targets, "local_gpu_count", lambda: None)  # unknown: left to hpo run's check of the started Ray
    targets.check_fits_this_machine(Resources(cpu=1, gpu=8))


def test_literal_types_name_what_the_registries_hold():
    """The sweep file's Literal types and the registries behind them list the same names."""
    from typing import get_args

    from orchestrator.search.registries import SAMPLERS, SCHEDULERS, SamplerName, SchedulerName
    from trials.precision import PRECISIONS, PrecisionName
    from trials.task_specs import TASK_SPECS, TaskName

    assert set(get_args(SamplerName)) == set(SAMPLERS)
    assert set(get_args(SchedulerName)) == set(SCHEDULERS)
    assert set(get_args(PrecisionName)) == set(PRECISIONS)
    assert set(get_args(TaskName)) == set(TASK_SPECS)


def _sections(model, path=()):
    """(dotted path, section model) of every section of the sweep file, nested ones too."""
    from orchestrator.sweep.sweep_sections import Section, annotation_options

    for name, field in model.model_fields.items():
        for option in annotation_options(field.annotation):
            if isinstance(option, type) and issubclass(option, Section):
                yield ".".join((*path, name)), option
                yield from _sections(option, (*path, name))


def _yaml_boolean_words():
    """(section path, key, word) for every allowed word of a sweep-file key that YAML 1.1 reads as a boolean."""
    from typing import Literal, get_args, get_origin

    from orchestrator.sweep.config import SweepConfig
    from orchestrator.sweep.sweep_sections import annotation_options

    found = set()
    for path, section in [("", SweepConfig), *_sections(SweepConfig)]:
        for key, field in section.model_fields.items():
            for option in annotation_options(field.annotation):
                if get_origin(option) is Literal:
                    found |= {(path, key, word) for word in get_args(option) if isinstance(word, str) and isinstance(yaml.safe_load(word), bool)}
    return sorted(found)


YAML_BOOLEAN_WORDS = _yaml_boolean_words()


def test_the_yaml_boolean_words_are_found():
    assert ("trial", "cache_frozen", "off") in YAML_BOOLEAN_WORDS  # the README's own example


@pytest.mark.parametrize("path, key, word", YAML_BOOLEAN_WORDS)
def test_a_word_yaml_reads_as_a_boolean_is_taken_as_the_word(write_sweep, path, key, word):
    """`cache_frozen: off`, as the README writes it, reaches pydantic as False: each such key takes it back."""
    sweep = write_sweep()
    text = sweep.read_text()
    raw = yaml.safe_load(text)
    section = raw.setdefault(path, {}) if path else raw
    section[key] = word
    sweep.write_text(yaml.safe_dump(raw).replace(f"{key}: '{word}'", f"{key}: {word}"))  # unquoted, as users write it
    assert f"{key}: {word}\n" in sweep.read_text()
    config = load_sweep(sweep)
    assert getattr(getattr(config, path) if path else config, key) == word


def test_cache_frozen_off_as_the_readme_writes_it_validates(write_sweep, no_ray_in_this_process):
    sweep = write_sweep(trial={"max_epochs": 1, "cache_frozen": "auto"})
    sweep.write_text(sweep.read_text().replace("cache_frozen: auto", "cache_frozen: off"))
    result = runner.invoke(app, ["validate", str(sweep)])
    assert result.exit_code == 0, result.output


def test_a_boolean_stays_refused_where_no_word_means_it(write_sweep):
    with pytest.raises(ConfigError, match="^sampler.name: False is invalid"):
        load_sweep(_edit(write_sweep(), lambda s: s["sampler"].update(name=False)))
