"""The labelled real-code corpus (bench/corpus_labels.json) is well formed; no network needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

LABELS = Path(__file__).resolve().parents[1] / "bench" / "corpus_labels.json"
FAMILIES = {"TRN1", "TRN2", "TRN3", "TRN4", "TRN5", "TRN7", "TRN9"}


def catalogue_codes() -> set[str]:
    """Return every code of the catalogue, from the module or else from `traincheck rules`."""
    try:
        from pytest_traincheck.catalog import CATALOG
    except ImportError:
        listing = subprocess.run([sys.executable, "-m", "pytest_traincheck", "rules", "--static"],
                                 capture_output=True, text=True, check=True).stdout
        return set(re.findall(r"^(TRN\d{3})\b", listing, flags=re.MULTILINE))
    return set(CATALOG)


@pytest.fixture(scope="module")
def corpus() -> dict:
    """Load the labels file."""
    return json.loads(LABELS.read_text())


def test_corpus_is_large_and_varied(corpus: dict) -> None:
    """At least 100 distinct files from at least 20 repositories."""
    keys = {(f["repo"], f["commit"], f["path"]) for f in corpus["files"]}
    assert len(keys) == len(corpus["files"]) >= 100
    assert len({f["repo"] for f in corpus["files"]}) >= 20


def test_every_entry_is_a_reference(corpus: dict) -> None:
    """Each file is an owner/name repository, a full commit hash and a relative .py or .ipynb path."""
    for entry in corpus["files"]:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry["repo"]), entry
        assert re.fullmatch(r"[0-9a-f]{40}", entry["commit"]), entry
        assert entry["path"].endswith((".py", ".ipynb")) and not entry["path"].startswith("/"), entry
        assert ".." not in Path(entry["path"]).parts, entry


def test_labels_use_catalogue_codes(corpus: dict) -> None:
    """Every label names a catalogued code, a positive line, a severity and a note."""
    codes = catalogue_codes()
    assert codes, "the catalogue is empty"
    for entry in corpus["files"]:
        for label in entry["labels"]:
            assert label["code"] in codes, (entry["path"], label)
            assert isinstance(label["line"], int) and label["line"] > 0, label
            assert label["severity"] in ("bug", "style"), label
            assert label["note"].strip(), label
            if "lines" in label:
                first, last = label["lines"]
                assert 0 < first <= last, label
            for place in label.get("also", []):
                assert place["path"].endswith(".py") and place["line"] > 0, label
            # notebook findings count lines within a cell, so a notebook label names its cell
            assert ("cell" in label) == entry["path"].endswith(".ipynb"), label
            assert label.get("cell", 1) > 0, label


def test_clean_families_exclude_labelled_ones(corpus: dict) -> None:
    """A family is either labelled or listed as checked-and-clean, never both, never neither."""
    for entry in corpus["files"]:
        labelled = {label["code"][:4] for label in entry["labels"]}
        clean = set(entry["clean_families"])
        assert clean <= FAMILIES, entry["path"]
        assert not clean & labelled, entry["path"]
        assert clean | labelled >= FAMILIES, entry["path"]


def test_corpus_has_bug_labels_in_several_families(corpus: dict) -> None:
    """The recall figures rest on bug-severity labels from more than one family."""
    bug_families = {label["code"][:4] for entry in corpus["files"] for label in entry["labels"]
                    if label["severity"] == "bug"}
    assert len(bug_families) >= 3


def test_left_out_codes_are_catalogued_and_unused(corpus: dict) -> None:
    """Codes the labels leave out exist, and no label uses one of them."""
    left_out = set(corpus["not_labelled_codes"])
    assert left_out <= catalogue_codes()
    used = {label["code"] for entry in corpus["files"] for label in entry["labels"]}
    assert not used & left_out
