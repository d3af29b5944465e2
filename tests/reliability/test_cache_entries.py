"""A hand-corrupted cache entry is a miss: the file is linted again and the entry rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_traincheck.config import LintConfig
from pytest_traincheck.lint import engine

SOURCE = "import torch\nouter = torch.ger(a, b)\n"


def _run(tmp_path: Path) -> list[tuple[str, int, str]]:
    summary, _, _ = engine.lint_paths([tmp_path / "train.py"], LintConfig(root=tmp_path),
                                      cache_dir=tmp_path / ".traincheck_cache")
    return [(f.path, f.line, f.code) for f in summary.findings]


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / ".traincheck_cache").rglob("*.json"))


CORRUPTIONS = {
    "facts_list": lambda e: {**e, "facts": [1]},
    "line_string": lambda e: {**e, "findings": [{**e["findings"][0], "line": "2"}]},
    "finding_not_object": lambda e: {**e, "findings": [7]},
    "findings_not_list": lambda e: {**e, "findings": {"a": 1}},
    "deferred_wrong": lambda e: {**e, "deferred": [[1, 2, 3]]},
    "class_facts_wrong": lambda e: {**e, "facts": {"Net": {"name": 3}}},
    "internal_error_string": lambda e: {**e, "internal_error": "no"},
    "unknown_field": lambda e: {**e, "findings": [{**e["findings"][0], "colour": "red"}]},
    "top_level_list": lambda e: [e],
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_a_wrong_shape_entry_is_a_miss(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SOURCE)
    cold = _run(tmp_path)
    assert cold == [("train.py", 2, "TRN901")]
    (entry,) = _entries(tmp_path)
    entry.write_text(json.dumps(CORRUPTIONS[name](json.loads(entry.read_text()))))
    assert _run(tmp_path) == cold
    json.loads(entry.read_text())  # rewritten
    assert _run(tmp_path) == cold


def test_a_deeply_nested_entry_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(SOURCE)
    cold = _run(tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_text("[" * 200_000 + "]" * 200_000)  # json.loads raises RecursionError on it
    assert _run(tmp_path) == cold


def test_the_key_follows_the_installed_torch_when_trn208_reads_its_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_traincheck.lint import cache

    def keys() -> tuple[str, str]:
        cache.installed_torch.cache_clear()
        return (cache.entry_key("a.py", b"x", engine.Settings(("TRN208",))),
                cache.entry_key("a.py", b"x", engine.Settings(("TRN901",))))

    before = keys()
    (tmp_path / "torch-99.0.dist-info").mkdir()  # another torch, found first on the path
    monkeypatch.syspath_prepend(str(tmp_path))
    after = keys()
    assert cache.installed_torch() == "99.0"
    monkeypatch.undo()
    keys()  # leave the real version cached for the tests that follow
    assert before[0] != after[0]  # TRN208 consults the installed torch for names the table lacks
    assert before[1] == after[1]  # other rules do not read it


def test_the_installed_torch_is_the_version_importlib_metadata_reports() -> None:
    import importlib.metadata

    from pytest_traincheck.lint import cache

    cache.installed_torch.cache_clear()
    try:
        expected = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        expected = "none"
    assert cache.installed_torch() == expected
