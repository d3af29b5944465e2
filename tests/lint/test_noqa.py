"""``# noqa`` comments: blanket, by code, by prefix, in any case, on multi-line findings."""

from __future__ import annotations

import pytest

from pytest_traincheck.lint.noqa import parse_noqa, suppressed
from pytest_traincheck.lint.testing import lint_source

CALL = "torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)"
# rules/noqa.py matches codes with `[A-Z][0-9]+` (one letter) where flake8 uses `[A-Z]+[0-9]+`: `TRN107` is never
# read as a code, so every `# noqa: TRNxxx` acts as a blanket `# noqa` and a list that starts with another
# tool's code (`# noqa: E501, TRN107`) stops at it.


def codes_on(source: str) -> list[tuple[int, str]]:
    """Lint ``source`` with TRN107 and return (line, code) of each finding."""
    findings, _ = lint_source(source, ["TRN107"], dedent=False)
    return [(f.line, f.code) for f in findings]


@pytest.mark.parametrize(
    "comment",
    [
        "# noqa",
        "# NOQA",
        "# NoQa",
        "#noqa",
        "# noqa: TRN107",
        "# noqa:TRN107",
        "# noqa: trn107",
        "# noqa: TRN1",
        "# noqa:TRN1",
        "# noqa: TRN",
        "# noqa: E501, TRN107",
        "# noqa: E501,TRN107",
        "# noqa: E501 TRN107",
        "# noqa: TRN107 -- the old name is what this test exercises",
        "# some comment  # noqa: TRN107",
        "# type: ignore  # noqa",
    ],
)
def test_noqa_suppresses(comment: str) -> None:
    assert codes_on(f"import torch\n{CALL}  {comment}\n") == []


@pytest.mark.parametrize(
    "comment",
    [
        "# noqa: E501",
        "# noqa: TRN108",
        "# noqa: TRN2",
        "# noqa: TRN1070",  # longer than the code: not a prefix of it
        "# no qa",
        "# qa",
    ],
)
def test_other_codes_do_not_suppress(comment: str) -> None:
    assert codes_on(f"import torch\n{CALL}  {comment}\n") == [(2, "TRN107")]


def test_noqa_applies_to_its_own_line_only() -> None:
    source = f"import torch  # noqa\n{CALL}\n{CALL}  # noqa: TRN107\n"
    assert codes_on(source) == [(2, "TRN107")]


def test_noqa_inside_a_string_is_not_a_comment() -> None:
    source = f'import torch\n{CALL}; note = "# noqa"\n'
    assert codes_on(source) == [(2, "TRN107")]


def test_multi_line_finding_noqa_on_first_or_last_line() -> None:
    first = "import torch\ntorch.nn.utils.clip_grad_norm(  # noqa: TRN107\n    model.parameters(),\n    1.0,\n)\n"
    last = "import torch\ntorch.nn.utils.clip_grad_norm(\n    model.parameters(),\n    1.0,\n)  # noqa: TRN107\n"
    unrelated = "import torch\ntorch.nn.utils.clip_grad_norm(\n    model.parameters(),\n    1.0,\n)  # noqa: E501\n"
    assert codes_on(first) == []
    assert codes_on(last) == []
    assert codes_on(unrelated) == [(2, "TRN107")]


def test_noqa_in_a_file_that_does_not_tokenize_falls_back_to_lines() -> None:
    # An unterminated triple-quoted string: tokenize fails, the line scan still finds the comment.
    noqa = parse_noqa('x = 1  # noqa: TRN107\ny = """\n')
    assert noqa == {1: frozenset({"TRN107"})}


def test_parse_noqa_map() -> None:
    source = "a  # noqa\nb  # noqa: TRN101, trn2\nc\nd  # NOQA:TRN3\n"
    assert parse_noqa(source) == {1: None, 2: frozenset({"TRN101", "TRN2"}), 4: frozenset({"TRN3"})}
    assert parse_noqa("x = 1\n") == {}


def test_suppressed() -> None:
    noqa = {1: None, 2: frozenset({"TRN1"})}
    assert suppressed(noqa, 1, "TRN402")
    assert suppressed(noqa, 2, "TRN107")
    assert not suppressed(noqa, 2, "TRN201")
    assert not suppressed(noqa, 3, "TRN107")


def test_noqa_through_the_cli(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pytest_traincheck import cli

    (tmp_path / "a.py").write_text(f"import torch\n{CALL}  # noqa: TRN107\n{CALL}  # noqa: E501\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lint", "--no-cache", "a.py"]) == 1
    assert capsys.readouterr().out.startswith("a.py:3:1: TRN107")


def test_noqa_for_another_code_through_the_cli(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pytest_traincheck import cli

    (tmp_path / "a.py").write_text(f"import torch\n{CALL}  # noqa: TRN101\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["lint", "--no-cache", "a.py"]) == 1
