"""Issue 20's shape of the code, kept: one IAT update is at most 4 calls through 5 files from the loop to the
attack's input gradient, no import circles (between modules or between packages), a README of one screen's worth.
Measured as benchmarks/code_shape.py measures it (the update's path traced while a tiny run trains)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shape() -> dict:
    spec = importlib.util.spec_from_file_location("code_shape", ROOT / "benchmarks" / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.measure(ROOT)


def test_one_update_is_four_calls_from_the_loop_to_the_attacks_core(shape):
    assert shape["update_path"][0].endswith("loop.py:run_steps"), shape["update_path"]
    assert shape["update_path"][-1] == "iat/attacks/core.py:input_grad", shape["update_path"]
    assert shape["update_calls"] <= 4 and shape["update_files"] <= 5, shape["update_path"]


def test_no_import_circles_and_no_arrow_back_up(shape):
    assert shape["import_circles"] == [] and shape["arrows_back_up"] == []


def test_the_readme_is_one_screens_worth(shape):
    assert shape["readme_lines"] < 200
