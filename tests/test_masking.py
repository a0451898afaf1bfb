"""Passwords are masked whatever characters they hold: generated passwords (property-based), and
the whole CLI path for a set of awkward ones, given in the URL or through ``${VAR}``."""

from __future__ import annotations

import html
import json
import string
import urllib.parse
from unittest import mock

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator import secrets
from orchestrator.cli import app
from orchestrator.config import parse_sweep
from orchestrator.errors import ConfigError
from orchestrator.secrets import MASK, mask, mask_tree, remember_url

# Every printable character, a few of the ones URL encoders and password generators produce
# often, and some unicode; no surrogates (text that cannot be encoded is not a password).
PASSWORDS = st.text(
    alphabet=st.one_of(st.sampled_from(string.printable.strip() + "/@:#?%&=+ "), st.characters(codec="utf-8", categories=["L", "N", "P", "S"])),
    min_size=3, max_size=24,
)
URL_TEMPLATES = (
    "postgresql+psycopg://hpo:{}@db.internal:5432/studies",
    "mysql+pymysql://hpo:{}@127.0.0.1/x?charset=utf8mb4",
    "http://mlflow:{}@mlflow.internal:5000",
)
AWKWARD = ["s3cr/etpw", "p@ss@word", "p%40ssword", "c0l:on:s", "ha#sh?mark", "%2Fslash%2F", "ünïcødé-пароль", 'quo"te\'s', "back\\slash", "sp ace d"]


# What the renderings below add around a URL: a password that is part of it would be "found" there.
_FIXED_TEXT = ' storage.study_db: is invalid: fix it {"study_db": } could not connect to : refused ' + MASK


def _renderings(text: str) -> list[str]:
    """How text reaches a user or a file: as is, in an error line, JSON, repr, HTML."""
    return [
        mask(text),
        str(ConfigError("storage.study_db", text, "fix it")),
        mask(json.dumps({"study_db": text})),
        json.dumps(mask_tree({"study_db": text})),
        mask(json.dumps({"study_db": text}, ensure_ascii=False)),
        mask(repr(text)),
        mask(html.escape(text)),
    ]


def _leaks(password: str, outputs: list[str]) -> list[str]:
    forms = {password, urllib.parse.quote(password, safe=""), json.dumps(password)[1:-1], repr(password)[1:-1], html.escape(password)}
    return [output for output in outputs for form in forms if form in output]


@settings(max_examples=150, deadline=None)
@given(password=PASSWORDS, template=st.sampled_from(URL_TEMPLATES), encoded=st.booleans())
def test_a_remembered_url_password_never_shows(password, template, encoded):
    assume(password not in template + _FIXED_TEXT and password.strip() == password)
    url = template.format(urllib.parse.quote(password, safe="") if encoded else password)
    with mock.patch.object(secrets, "_remembered", set()):
        remember_url(url)
        assert not _leaks(password, _renderings(url))


@settings(max_examples=150, deadline=None)
@given(password=PASSWORDS.filter(lambda p: not any(c in p for c in " \"'<>`\\")), template=st.sampled_from(URL_TEMPLATES), encoded=st.booleans())
def test_a_password_in_a_url_never_given_to_us_is_masked_by_pattern(password, template, encoded):
    """Text that never came through a URL field (a driver's error message): the pattern alone masks it."""
    assume(password not in template + _FIXED_TEXT)
    url = template.format(urllib.parse.quote(password, safe="") if encoded else password)
    with mock.patch.object(secrets, "_remembered", set()):
        assert not _leaks(password, [mask(url), mask(f"could not connect to {url}: refused")])


def test_the_pattern_keeps_what_is_no_secret():
    assert mask("sqlite:///hpo.db and ray://head:10001 and http://127.0.0.1:5000/#/experiments/1") == \
        "sqlite:///hpo.db and ray://head:10001 and http://127.0.0.1:5000/#/experiments/1"
    assert mask("postgresql+psycopg://hpo:s3cret@db:5432/studies") == f"postgresql+psycopg://hpo:{MASK}@db:5432/studies"
    assert mask("https://host/api?token=abc123&x=1&db_password=zz") == f"https://host/api?token={MASK}&x=1&db_password={MASK}"


def _sweep(tmp_path, tiny_model, tiny_csv, study_db: str, mlflow: str | None = None) -> dict:
    return {
        "name": "masked", "model": str(tiny_model),
        "data": {"source": str(tiny_csv), "max_length": 16, "train_size": 40, "val_size": 20},
        "search_space": {"learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2}},
        "storage": {"study_db": study_db, "mlflow": mlflow or f"sqlite:///{tmp_path / 'mlruns.db'}", "results_dir": str(tmp_path / "runs")},
    }


@pytest.mark.parametrize("password", AWKWARD)
@pytest.mark.parametrize("given_as", ["url", "env"])
def test_awkward_passwords_never_reach_the_terminal_or_json(password, given_as, tmp_path, tiny_model, tiny_csv, monkeypatch):
    """The issue's case: the study DB is unreachable, and the error line names its URL masked."""
    in_url = urllib.parse.quote(password, safe="") if given_as == "env" or "@" in password or " " in password else password
    monkeypatch.setenv("HPO_TEST_DB_PASSWORD", in_url)
    userinfo = "${HPO_TEST_DB_PASSWORD}" if given_as == "env" else in_url
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_sweep(tmp_path, tiny_model, tiny_csv, f"postgresql+psycopg://hpo:{userinfo}@127.0.0.1:1/x")))
    with mock.patch.object(secrets, "_remembered", set()):
        for arguments in (["validate", str(path)], ["validate", str(path), "--json"], ["run", str(path), "--json"], ["validate", str(path), "--debug"]):
            result = CliRunner().invoke(app, arguments)
            assert result.exit_code == 2, result.output
            assert "storage.study_db" in result.output and MASK in result.output
            assert not _leaks(password, [result.output]) and not _leaks(in_url, [result.output]), result.output
    assert not (tmp_path / "mlruns.db").exists()


@pytest.mark.parametrize("password", ["p/ss:w#rd", "ünï/cødé"])
def test_mlflow_server_password_is_masked(password, tmp_path, tiny_model, tiny_csv):
    mlflow = f"http://user:{password}@127.0.0.1:1"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_sweep(tmp_path, tiny_model, tiny_csv, f"sqlite:///{tmp_path / 'hpo.db'}", mlflow), allow_unicode=True))
    with mock.patch.object(secrets, "_remembered", set()):
        result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "storage.mlflow" in result.output, result.output
    assert password not in result.output and MASK in result.output


def test_an_unencoded_at_sign_in_a_password_is_named(tmp_path, tiny_model, tiny_csv):
    config = parse_sweep(_sweep(tmp_path, tiny_model, tiny_csv, "postgresql+psycopg://hpo:p@ss@127.0.0.1/x"), tmp_path)
    from orchestrator.storage.study import check_reachable

    with pytest.raises(ConfigError, match="unencoded '@'; write it as %40") as raised:
        check_reachable(config.storage.study_db)
    assert "p@ss" not in str(raised.value)


def test_the_ledger_snapshot_masks_the_password_in_json(tmp_path, tiny_model, tiny_csv):
    from orchestrator.storage.ledger import config_snapshot

    password = 'q"uo\\te/@x'
    url = f"postgresql+psycopg://hpo:{urllib.parse.quote(password, safe='')}@127.0.0.1/x"
    with mock.patch.object(secrets, "_remembered", set()):
        snapshot = config_snapshot(parse_sweep(_sweep(tmp_path, tiny_model, tiny_csv, url), tmp_path))
    assert not _leaks(password, [snapshot]) and urllib.parse.quote(password, safe="") not in snapshot
    assert json.loads(snapshot)["storage"]["study_db"] == f"postgresql+psycopg://hpo:{MASK}@127.0.0.1/x"
