"""Sweep-file validation: each malformed file gives its specific one-line error, and nothing is written."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.config import load_sweep
from orchestrator.errors import ConfigError
from orchestrator.ray_session import check_ray_address
from orchestrator.runner import validate

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
    ("unknown hyperparameter", lambda s: s["search_space"].update(lr={"type": "float", "low": 0.1, "high": 0.2}), "search_space", "unknown parameter 'lr'"),
    ("missing search-space file", lambda s: s.update(search_space="nope.yaml"), "search_space", "no such file"),
    ("negative gpu", lambda s: s["resources"].update(gpu=-1), "resources.gpu", "give 0 or more"),
    ("zero memory", lambda s: s["resources"].update(memory_gb=0), "resources.memory_gb", "give more than 0"),
    ("registry name with a slash", lambda s: s.update(registered_model="team/model"), "registered_model", "cannot contain '/', ':' or '%'"),
    ("registered model with two objectives",
     lambda s: s.pop("objective") and s.update(registered_model="m", objectives=[{"metric": "val_f1_macro", "mode": "max"}, {"metric": "trainable_params", "mode": "min"}]),
     "registered_model", "needs one best trial"),
    ("unset env var in db url", lambda s: s["storage"].update(study_db="postgresql://u:${HPO_NOT_SET_ANYWHERE}@h/db"), "storage.study_db", "export it"),
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


@pytest.mark.parametrize("change, field, fix", [c[1:] for c in PREFLIGHT_CASES], ids=[c[0] for c in PREFLIGHT_CASES])
def test_preflight_errors_before_anything_is_written(write_sweep, tmp_path, change, field, fix):
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


def test_a_cluster_is_checked_when_joined_not_by_validate(write_sweep, tmp_path):
    """With cluster.address set, the nodes are unknown until `hpo run` joins: validate leaves resources to it."""
    validate(load_sweep(write_sweep(cluster={"address": "127.0.0.1:1"}, resources={"cpu": 4096, "gpu": 64})))
    assert not (tmp_path / "study.db").exists()


def test_empty_data_file_is_refused(write_sweep, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="data.source: .*cannot be read as a table"):
        validate(load_sweep(write_sweep(data={"source": str(tmp_path / "empty.csv")})))


def test_single_class_data_is_refused(write_sweep, tmp_path):
    (tmp_path / "one.csv").write_text("text,label\n" + "good,pos\n" * 6)
    path = write_sweep(data={"source": str(tmp_path / "one.csv"), "train_size": 3, "val_size": 2})
    with pytest.raises(ConfigError, match="data.label_column: .*only one class"):
        validate(load_sweep(path))


def test_cli_validate_ok(write_sweep):
    result = runner.invoke(app, ["validate", str(write_sweep())])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "400 train / 100 val" in result.output


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
    from orchestrator import targets
    from orchestrator.config import Resources

    monkeypatch.setattr(targets, "local_gpu_count", lambda: 1)
    targets.check_fits_this_machine(Resources(cpu=1, gpu=1))
    with pytest.raises(ConfigError, match=r"^resources\.gpu: 2\.0 is invalid: this machine has 1 GPU and .*ask for at most 1 per trial"):
        targets.check_fits_this_machine(Resources(cpu=1, gpu=2))
    monkeypatch.setattr(targets, "local_gpu_count", lambda: None)  # unknown: left to hpo run's check of the started Ray
    targets.check_fits_this_machine(Resources(cpu=1, gpu=8))
