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
from orchestrator.errors import ConfigError
from orchestrator.secrets import MASK, mask, mask_tree, remember_url
from orchestrator.sweep.config import parse_sweep

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
AWKWARD = ["s3cr/etpw", "p@ss@word", "p%40ssword", "c0l:on:s", "ha#sh?mark", "%2Fslash%2F", "ünïcødé-пароль", 'quo"te\'s', "back\\slash", "sp ace d",
           "Sêcr/3t@Pw#k?9", "a?b@cd#ef/gh", "x#y/z@w?v:u"]
# The characters that end a part of a URL, and one that is not ASCII, in every order, between runs of other text.
DELIMITERS = ["@", "?", "#", "/", ":", "ê"]
FILLER = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N"]), min_size=0, max_size=4)
DELIMITED_PASSWORDS = st.builds(
    lambda order, fillers: "".join(filler + delimiter for filler, delimiter in zip(fillers, order, strict=False)) + fillers[-1],
    st.lists(st.sampled_from(DELIMITERS), min_size=1, max_size=8),
    st.lists(FILLER, min_size=9, max_size=9),
).map(lambda password: password if len(password) >= 3 else password + "pw9")


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


_FRAGMENT = 4  # a piece of the password this long that shows is a leak (shorter ones occur in any text)


def _fragments(password: str) -> set[str]:
    """Every piece of ``password`` of _FRAGMENT characters or more: what a parser that cuts it at
    a delimiter (the host 'Pw#k' of 'Sêcr/3t@Pw#k?9') would show."""
    return {password[start:end] for start in range(len(password)) for end in range(start + _FRAGMENT, len(password) + 1)}


def _leaks(password: str, outputs: list[str], prose: bool = False) -> list[str]:
    """The forms of ``password`` (and its pieces) that show in ``outputs``. In ``prose`` (a
    command's output, a traceback) a piece of plain ASCII letters ('word', 'back') is no leak."""
    pieces = {fragment for fragment in _fragments(password) if not (prose and fragment.isascii() and fragment.isalpha())}
    forms = {password, urllib.parse.quote(password, safe=""), json.dumps(password)[1:-1], repr(password)[1:-1], html.escape(password), *pieces}
    return [f"{form!r} in {output!r}" for output in outputs for form in forms if form in output]


def _errors_of(parse, url: str) -> list[Exception]:
    try:
        parse(url)
    except ValueError as error:  # a port that is not a number: its message quotes it
        return [error]
    return []


def _driver_views(url: str) -> list[str]:
    """What drivers and URL libraries read in ``url``, as their error messages quote it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url if not _errors_of(make_url, url) else "postgresql://")
    split = urllib.parse.urlsplit(url if not _errors_of(urllib.parse.urlsplit, url) else "http://")
    return [str(error) for parse in (make_url, urllib.parse.urlsplit) for error in _errors_of(parse, url)] + [
        f'connection to server at "{parsed.host}", port {parsed.port} failed', f'could not translate host name "{parsed.host}" to address',
        f'database "{parsed.database}" does not exist', f'password authentication failed for user "{parsed.username}"', repr(dict(parsed.query)),
        f"{split.netloc} {split.path} {split.query} {split.fragment}", f"Failed to resolve '{split.hostname}'",
    ]


@settings(max_examples=200, deadline=None)
@given(password=st.one_of(DELIMITED_PASSWORDS, PASSWORDS), template=st.sampled_from(URL_TEMPLATES))
def test_a_url_is_refused_or_its_password_read_as_written(password, template):
    """Split the URL as the driver does (SQLAlchemy's make_url): either the password it reads is the
    one written, whole, or the URL is refused; percent-encoded, it is always read as written."""
    from sqlalchemy.engine import make_url

    url = template.format(password)
    if not secrets.misread_userinfo(url):
        parsed = make_url(url)
        assert parsed.password == urllib.parse.unquote(password) and parsed.host == make_url(template.format("x")).host
    encoded = template.format(urllib.parse.quote(password, safe=""))
    assert not secrets.misread_userinfo(encoded) and make_url(encoded).password == password


@settings(max_examples=200, deadline=None)
@given(password=st.one_of(DELIMITED_PASSWORDS, PASSWORDS), template=st.sampled_from(URL_TEMPLATES))
def test_no_piece_of_a_misread_password_shows_where_a_driver_quotes_the_url(password, template):
    """Whichever piece of the password a parser takes for the host, path, query or fragment, it is
    masked in every output (an error that quotes the 'host' of 'Sêcr/3t@Pw#k?9' included)."""
    url = template.format(password)
    assume(not _fragments(password) & _fragments(template + _FIXED_TEXT + " ".join(_driver_views(template.format("x")))))
    with mock.patch.object(secrets, "_remembered", set()):
        remember_url(url)
        assert not _leaks(password, _renderings(url) + [mask(view) for view in _driver_views(url)])


@settings(max_examples=150, deadline=None)
@given(password=PASSWORDS, template=st.sampled_from(URL_TEMPLATES), encoded=st.booleans())
def test_a_remembered_url_password_never_shows(password, template, encoded):
    assume(not _fragments(password) & _fragments(template + _FIXED_TEXT) and password.strip() == password)
    url = template.format(urllib.parse.quote(password, safe="") if encoded else password)
    with mock.patch.object(secrets, "_remembered", set()):
        remember_url(url)
        assert not _leaks(password, _renderings(url))


@settings(max_examples=150, deadline=None)
@given(password=PASSWORDS.filter(lambda p: not any(c in p for c in " \"'<>`\\")), template=st.sampled_from(URL_TEMPLATES), encoded=st.booleans())
def test_a_password_in_a_url_never_given_to_us_is_masked_by_pattern(password, template, encoded):
    """Text that never came through a URL field (a driver's error message): the pattern alone masks it."""
    assume(not _fragments(password) & _fragments(template + _FIXED_TEXT))
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
    in_url = urllib.parse.quote(password, safe="") if given_as == "env" or " " in password else password
    monkeypatch.setenv("HPO_TEST_DB_PASSWORD", in_url)
    userinfo = "${HPO_TEST_DB_PASSWORD}" if given_as == "env" else in_url
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(_sweep(tmp_path, tiny_model, tiny_csv, f"postgresql+psycopg://hpo:{userinfo}@127.0.0.1:1/x")))
    with mock.patch.object(secrets, "_remembered", set()):
        for arguments in (["validate", str(path)], ["validate", str(path), "--json"], ["run", str(path), "--json"], ["validate", str(path), "--debug"]):
            result = CliRunner().invoke(app, arguments)
            assert result.exit_code == 2, result.output
            assert "storage.study_db" in result.output and MASK in result.output
            assert not _leaks(password, [result.output], prose=True) and not _leaks(in_url, [result.output], prose=True), result.output
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


@pytest.mark.parametrize("password", ["p@ss", "Sêcr/3t@Pw#k?9", "ab?cd@efgh", "ab#cd@efgh", "ab/cd@efgh", "abcd@ef/gh"])
def test_a_password_the_driver_would_misread_is_refused(password, tmp_path, tiny_model, tiny_csv):
    """An unencoded '@' followed by '?', '#' or '/' (in any order) once passed: the driver read a
    piece of the password as the host and printed it. Refused before any connection, masked whole."""
    from orchestrator.storage.study import check_reachable

    for url in (f"postgresql+psycopg://hpo:{password}@127.0.0.1:5432/test", f"http://user:{password}@127.0.0.1:1"):
        field = "storage.study_db" if url.startswith("postgresql") else "storage.mlflow"
        storage = {"study_db": url} if field == "storage.study_db" else {"study_db": f"sqlite:///{tmp_path / 'hpo.db'}", "mlflow": url}
        raw = _sweep(tmp_path, tiny_model, tiny_csv, storage["study_db"], storage.get("mlflow"))
        with mock.patch.object(secrets, "_remembered", set()), pytest.raises(ConfigError, match="percent-encode the password: %40 for '@'") as raised:
            from orchestrator.run.targets import check_targets

            check_targets(parse_sweep(raw, tmp_path))
        assert str(raised.value).startswith(f"{field}: ") and not _leaks(password, [str(raised.value)], prose=True), str(raised.value)
    with mock.patch.object(secrets, "_remembered", set()):
        check_reachable(f"postgresql+psycopg://postgres:{urllib.parse.quote(password, safe='')}@127.0.0.1:5432/test")  # trust auth


@pytest.mark.parametrize("given_as", ["url", "env"])
def test_the_issues_password_never_shows_in_the_inspection_commands(given_as, tmp_path, monkeypatch):
    """`hpo studies --db`, `hpo trials --db` and `hpo status` (its study_state) read a URL given to them."""
    from orchestrator.jobs.job_status import study_state

    password = "Sêcr/3t@Pw#k?9"
    monkeypatch.setenv("HPO_TEST_DB_PASSWORD", password)
    written = f"postgresql+psycopg://postgres:{'${HPO_TEST_DB_PASSWORD}' if given_as == 'env' else password}@127.0.0.1:5432/test"
    url = written.replace("${HPO_TEST_DB_PASSWORD}", password)
    with mock.patch.object(secrets, "_remembered", set()):
        outputs = [CliRunner().invoke(app, [*command, "--db", url, *json]) for command in (["studies"], ["trials", "x"]) for json in ([], ["--json"])]
        assert all(result.exit_code == 2 and "--db: " in result.output for result in outputs), [result.output for result in outputs]
        state = study_state(written, "x")
    assert not state["readable"] and not _leaks(password, [state["why"]], prose=True), state
    assert not _leaks(password, [result.output for result in outputs], prose=True)


def test_the_ledger_snapshot_masks_the_password_in_json(tmp_path, tiny_model, tiny_csv):
    from orchestrator.storage.ledger import config_snapshot

    password = 'q"uo\\te/@x'
    url = f"postgresql+psycopg://hpo:{urllib.parse.quote(password, safe='')}@127.0.0.1/x"
    with mock.patch.object(secrets, "_remembered", set()):
        snapshot = config_snapshot(parse_sweep(_sweep(tmp_path, tiny_model, tiny_csv, url), tmp_path))
    assert not _leaks(password, [snapshot]) and urllib.parse.quote(password, safe="") not in snapshot
    assert json.loads(snapshot)["storage"]["study_db"] == f"postgresql+psycopg://hpo:{MASK}@127.0.0.1/x"
