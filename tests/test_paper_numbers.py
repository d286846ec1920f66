"""src/iat/paper_numbers.json holds exactly the numbers printed in the paper.

Each table is read back from the paper's text (tab-separated rows after its caption) and compared
cell by cell; the probe accuracies are found in Section 3's sentences. Skipped, with the reason,
when the paper's text is not beside the repository (shared/paper/ or ../shared/paper/).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iat.methods import paper_method_names
from iat.reproduce.paper import load_paper_numbers

ROOT = Path(__file__).parents[1]
PAPER_NAME = "interpolated-adversarial-training.txt"
CANDIDATES = [ROOT / "shared" / "paper" / PAPER_NAME, ROOT / ".." / "shared" / "paper" / PAPER_NAME]
WHITEBOX = ("table1", "table2", "table3", "table4")
TRANSFER_TARGETS = ("pgd", "iat-mixup", "iat-manifold-mixup")


@pytest.fixture(scope="module")
def paper_text() -> str:
    for path in CANDIDATES:
        if path.is_file():
            return path.read_text(encoding="utf-8")
    pytest.skip(f"the paper's text is not here (looked for {', '.join(str(p) for p in CANDIDATES)})")


@pytest.fixture(scope="module")
def numbers() -> dict:
    return load_paper_numbers()


def table_rows(text: str, number: int) -> list[list[str]]:
    """The tab-separated lines following the caption 'Table N.', split into cells."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(f"Table {number}.")), None)
    assert start is not None, f"caption 'Table {number}.' not found in the paper's text"
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if "\t" in line:
            rows.append(line.split("\t"))
        elif rows and line.strip():
            break
    assert rows, f"no table rows after the caption of Table {number}"
    return rows


def parse_cell(text: str) -> list[float | None] | None:
    """'4.43 \\pm 0.09', '3.47±0.09' -> [mean, std]; '4.80' -> [4.8, None]; '-' -> None."""
    text = text.strip()
    if text == "-":
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:\\pm|±)\s*(\d+(?:\.\d+)?)", text)
    if m:
        return [float(m[1]), float(m[2])]
    return [float(text), None]


@pytest.mark.parametrize("name", WHITEBOX)
def test_whitebox_tables_match_the_paper(paper_text, numbers, name):
    paper_rows = table_rows(paper_text, int(name[-1]))[1:]  # the first line is the header
    ours = numbers[name]["rows"]
    assert [r[0] for r in paper_rows] == [r["label"] for r in ours], f"{name}: row labels or order differ"
    for text_row, row in zip(paper_rows, ours):
        expected = [parse_cell(c) for c in text_row[1:]]
        got = [row["cells"][c] for c in numbers[name]["columns"]]
        assert got == expected, f"{name}, row {row['label']!r}: paper_numbers.json {got} != paper {expected}"


def test_transfer_table_matches_the_paper(paper_text, numbers):
    eps_line, _, *rows = table_rows(paper_text, 5)
    t = numbers["table5"]
    assert [int(e) for e in eps_line[1:] if e.strip()] == t["eps_255"]
    assert [r[0] for r in rows] == [r["label"] for r in t["rows"]]
    for text_row, row in zip(rows, t["rows"]):
        got = [row["cells"][str(e)][target] for e in t["eps_255"] for target in TRANSFER_TARGETS]
        assert got == [float(c) for c in text_row[1:]], f"table5, row {row['label']!r}"


@pytest.mark.parametrize("name,key", [("table6", "eps_255"), ("table7", "steps")])
def test_sweep_tables_match_the_paper(paper_text, numbers, name, key):
    header, *rows = table_rows(paper_text, int(name[-1]))
    t = numbers[name]
    assert [int(c) for c in header[1:]] == t[key]
    assert [r[0] for r in rows] == [r["label"] for r in t["rows"]]
    for text_row, row in zip(rows, t["rows"]):
        got = [row["cells"][str(k)] for k in t[key]]
        assert got == [float(c) for c in text_row[1:]], f"{name}, row {row['label']!r}"


def test_probe_accuracies_match_section_3(paper_text, numbers):
    probe = numbers["probe"]
    assert f"trained the model with the random labels for {probe['epochs']} epochs" in paper_text
    assert f"fitting {probe['n']} randomly labeled examples" in paper_text.replace("\n", " ")
    for row in probe["rows"]:
        sentence = f"{row['accuracy']:.2f}% ({row['label']})"
        assert sentence in paper_text, f"{sentence!r} is not in Section 3"


def test_every_table_names_each_of_our_methods_once(numbers):
    """Independent of the paper's text: the reports rely on this structure."""
    for name in WHITEBOX:
        methods = [r["method"] for r in numbers[name]["rows"] if r["method"] is not None]
        assert sorted(methods) == sorted(paper_method_names()), name
    for name in ("table5", "table6", "table7"):
        assert [r["method"] for r in numbers[name]["rows"]] == list(TRANSFER_TARGETS), name
    assert {r["method"] for r in numbers["probe"]["rows"]} <= set(paper_method_names())
