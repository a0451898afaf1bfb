"""The README's table of hyperparameters says what ``trials.hyperparameters`` declares: each
numeric parameter's valid values are its ``DOMAINS`` entry, each named choice is in ``CHOICES``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trials.hyperparameters import CHOICES, DOMAINS, Domain

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
HEADER = "| parameter | default | valid values | what it does |"


def table_rows() -> dict[str, str]:
    """Each parameter of the README's table, with the valid values the table gives it."""
    lines = README[README.index(HEADER):].splitlines()[2:]
    rows: dict[str, str] = {}
    for line in lines:
        if not line.startswith("| `"):
            break
        names_cell, _, valid_cell, _ = (cell.strip() for cell in line.strip("|").split(" | "))
        names = re.findall(r"`(\w+)`", names_cell)
        values = valid_cell.split("; ") if len(names) > 1 else [valid_cell]
        assert len(values) == len(names), f"README.md's row for {names} gives {len(values)} valid values"
        rows.update(zip(names, values, strict=True))
    return rows


def domain_of(text: str) -> Domain:
    """``> 0``, ``whole ≥ 1``, ``[0, 1) or `null```, ``whole, 0 to the model's layers, or `null``` as a Domain."""
    text = re.sub(r"\s*\(\d+: [^)]*\)$", "", text)  # a remark: ≥ 0 (0: no clipping)
    nullable = text.endswith("or `null`")
    text = text.removesuffix("or `null`").strip(" ,")
    integer = text.startswith("whole")
    text = text.removeprefix("whole").strip(" ,")
    if interval := re.fullmatch(r"([\[(])([\d.]+), ([\d.]+)([\])])", text):
        return Domain(low=float(interval[2]), high=float(interval[3]), low_open=interval[1] == "(",
                      high_open=interval[4] == ")", integer=integer, nullable=nullable)
    if bound := re.fullmatch(r"(>|≥) ([\d.]+)", text):
        return Domain(low=float(bound[2]), low_open=bound[1] == ">", integer=integer, nullable=nullable)
    if to_depth := re.fullmatch(r"([\d.]+) to the model's layers", text):  # the upper bound is checked per model
        return Domain(low=float(to_depth[1]), integer=integer, nullable=nullable)
    raise AssertionError(f"README.md's valid values {text!r} are not in a form this test reads")


def test_the_table_names_every_hyperparameter():
    assert set(table_rows()) == set(DOMAINS) | set(CHOICES)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_numeric_valid_values_match_domains(name):
    assert domain_of(table_rows()[name]) == DOMAINS[name]


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_named_valid_values_match_choices(name):
    listed = re.findall(r"`(\w+)`", table_rows()[name])
    assert table_rows()[name] == "the names" or tuple(listed) == CHOICES[name]
