"""Shared fixtures: a tiny randomly initialised BERT, a tiny labelled dataset, one local Ray
for the session, a fresh PostgreSQL database, and a helper that writes sweep files."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ray.cluster_utils.Cluster (nodes started inside the test process) fails to create trial actors
# ("actor creation cancelled") when this machine has a Ray auth token (~/.ray/auth_token, written
# by `ray start`). Those tests are about scheduling and node loss; tests/test_cluster.py covers
# token-authenticated clusters started with `ray start`.
IN_PROCESS_CLUSTER_ENV = {"RAY_AUTH_MODE": "disabled"}

POSTGRES_ADMIN_URL = os.environ.get("HPO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

WORDS = {
    "positive": ["good", "great", "love", "happy", "excellent", "nice"],
    "negative": ["bad", "awful", "hate", "sad", "terrible", "poor"],
    "neutral": ["the", "a", "plane", "phone", "today", "is", "it", "was"],
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer BERT (random weights) and a word-level tokenizer, saved like a pre-trained model."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted({w for ws in WORDS.values() for w in ws})
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    import torch

    with torch.random.fork_rng():  # the same weights whatever ran before: a test's outcome must not depend on the order
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    return folder


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative", "neutral"])
        words = rng.choices(WORDS["neutral"], k=rng.randint(2, 6))
        if label != "neutral":
            words += rng.choices(WORDS[label], k=2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    import pandas as pd

    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    pd.DataFrame(make_rows(600)).to_csv(path, index=False)
    return path


def encoded_tiny_data(tiny_model, tiny_csv, train_size: int, val_size: int, noisy_rate: float = 0.0):
    """(label names, pad token id, TrialData) of the tiny dataset, tokenised like a sweep does."""
    import pandas as pd
    from transformers import AutoTokenizer

    from trials.augment import noisy_copies
    from trials.data import encode, labelled_texts, split
    from trials.finetune import TrialData

    texts = labelled_texts(pd.read_csv(tiny_csv), "text", "label")
    train, val = split(texts, train_size, val_size, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    noisy = encode(tokenizer, noisy_copies(val.texts, noisy_rate, seed=0), val.labels, 16) if noisy_rate else None
    data = TrialData(encode(tokenizer, train.texts, train.labels, 16), encode(tokenizer, val.texts, val.labels, 16), val_noisy=noisy)
    return texts.label_names, tokenizer.pad_token_id, data


class Recorder:
    """A report function that keeps every epoch's metrics and a copy of every checkpoint."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.metrics: list[dict] = []

    def __call__(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.metrics.append(metrics)
        if checkpoint_dir is not None:
            shutil.copytree(checkpoint_dir, self.folder / f"epoch{metrics['epoch']}")


def comparable_metrics(metrics: dict) -> dict:
    """A trial's report without what varies between identical runs (timings) or is not a number."""
    return {key: value for key, value in metrics.items() if key not in ("samples_per_s", "setup_seconds", "epoch_seconds", "frozen_cache")}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mlflow_runs(config):
    """(client, parent runs, child runs) of a sweep's MLflow experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(config.storage.mlflow)
    experiment = client.get_experiment_by_name(config.name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    return client, parents, children


def registered_model(tracking_uri: str, name_version: str):
    """The model registered as ``NAME/VERSION`` in the MLflow store at ``tracking_uri``, loaded
    as users load it (``mlflow.transformers.load_model``): a transformers pipeline."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return mlflow.transformers.load_model(f"models:/{name_version}")
    finally:
        mlflow.set_tracking_uri(None)


def described_inputs(inputs) -> dict[str, dict]:
    """A run's dataset inputs by their context (train, validation, test): what the MLflow UI shows of each."""
    import json

    described = {}
    for item in inputs:
        dataset = item.dataset
        context = {tag.key: tag.value for tag in item.tags}["mlflow.data.context"]
        described[context] = {
            "name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type, "source": json.loads(dataset.source),
            "profile": json.loads(dataset.profile), "columns": [column["name"] for column in json.loads(dataset.schema)["mlflow_colspec"]],
        }
    return described


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for every test that runs a sweep in-process (starting Ray costs seconds)."""
    import ray

    # "local": a Ray of its own, never a cluster `ray start` left on this machine (another test or test run may have one)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as error:  # noqa: BLE001
        if os.environ.get("HPO_REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL} ({type(error).__name__}); start it or set HPO_TEST_POSTGRES_URL")
    name = f"hpo_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield str(sa.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False))
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def study_db_url(request, tmp_path) -> str:
    """The same test against each study-database backend: a SQLite file, then the local PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def study_name() -> str:
    """A name no other test uses (the PostgreSQL database is shared by the whole session)."""
    return f"s-{uuid.uuid4().hex[:8]}"


TINY_SPACE = {
    "learning_rate": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [8, 16]},
    "unfreeze_depth": {"type": "int", "low": 1, "high": 2},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2},
    "weight_decay": 0.01,
}


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory) -> Path:
    """An MLflow store with its tables created and nothing in them: MLflow's migrations of a new
    store take seconds, which every in-process sweep would pay again."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlruns.db"
    client = MlflowClient(f"sqlite:///{path}")
    client.search_experiments()
    client._tracking_client.store.engine.dispose()
    return path


@pytest.fixture
def write_sweep(request, tmp_path, tiny_model, tiny_csv):
    """Write a sweep file for the tiny model and data into ``tmp_path``; keyword arguments override
    sections (``None`` removes one). A test that runs its sweeps in-process (it uses ``ray_session``)
    starts from an empty, already created MLflow store; the others (subprocesses, tests of what
    is written before a run starts) find none, as users do."""
    if "ray_session" in request.fixturenames and not (tmp_path / "mlruns.db").exists():
        shutil.copyfile(request.getfixturevalue("empty_mlflow_store"), tmp_path / "mlruns.db")

    def write(name: str = "tiny", **overrides) -> Path:
        sweep = {
            "name": name,
            "objective": {"metric": "val_f1_macro", "mode": "max"},
            "model": str(tiny_model),
            "data": {"source": str(tiny_csv), "text_column": "text", "label_column": "label",
                     "max_length": 16, "train_size": 400, "val_size": 100},
            "search_space": TINY_SPACE,
            "trial": {"max_epochs": 3},
            "budget": {"n_trials": 4, "max_concurrent": 2},
            "sampler": {"name": "tpe", "seed": 0},
            "scheduler": {"name": "fifo"},
            "resources": {"cpu": 1, "gpu": 0},
            "storage": {"study_db": f"sqlite:///{tmp_path / 'study.db'}",
                        "mlflow": f"sqlite:///{tmp_path / 'mlruns.db'}",
                        "results_dir": str(tmp_path / "runs")},
        }
        for key, value in overrides.items():
            if value is None:
                sweep.pop(key, None)
            elif isinstance(value, dict) and isinstance(sweep.get(key), dict) and key != "search_space":
                sweep[key] = {**sweep[key], **value}
            else:
                sweep[key] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(sweep, sort_keys=False))
        return path

    return write
