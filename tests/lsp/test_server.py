"""`traincheck server`: a real LSP client (pygls) drives the server over stdio, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pygls")
types = pytest.importorskip("lsprotocol.types")
from pygls.lsp.client import LanguageClient  # noqa: E402

from pytest_traincheck.lsp import line_edits, noqa_line, with_noqa  # noqa: E402
from pytest_traincheck.lint.findings import Finding  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"
TRAIN = '''import torch
import torch.nn.functional as F

def train(model, loader, opt):
    for x, y in loader:
        tag, loss = "🔥", F.cross_entropy(model(x).softmax(dim=1), y)  # 🔥 is 2 UTF-16 units
        loss.backward()
        opt.step()
        torch.nn.utils.clip_grad_norm(model.parameters(), 1.0)
'''
TIMEOUT = 60


class Session:
    """A pygls client talking to `python -m pytest_traincheck server`, collecting diagnostics."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.client = LanguageClient("traincheck-test", "1")
        self.diagnostics: dict[str, list[Any]] = {}
        self.published = asyncio.Queue()

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def on_diagnostics(ls: Any, params: Any) -> None:
            self.diagnostics[params.uri] = params.diagnostics
            self.published.put_nowait(params)

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        await self.client.start_io(sys.executable, "-m", "pytest_traincheck", "server", env=env, cwd=str(self.root))
        result = await asyncio.wait_for(self.client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(general=types.GeneralClientCapabilities(
                position_encodings=[types.PositionEncodingKind.Utf16])),
            root_uri=self.root.as_uri(), workspace_folders=[types.WorkspaceFolder(uri=self.root.as_uri(), name="p")])),
            TIMEOUT)
        self.capabilities = result.capabilities
        self.client.initialized(types.InitializedParams())

    async def next_diagnostics(self, uri: str) -> list[Any]:
        while True:
            params = await asyncio.wait_for(self.published.get(), TIMEOUT)
            if params.uri == uri:
                return params.diagnostics

    async def stop(self) -> None:
        await asyncio.wait_for(self.client.shutdown_async(None), TIMEOUT)
        self.client.exit(None)
        await self.client.stop()


def _apply(text: str, edits: list[Any]) -> str:
    """Apply LSP text edits (line-based ones, as the server sends) to ``text``."""
    lines = text.splitlines(keepends=True)
    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        assert e.range.start.character == 0 and e.range.end.character == 0
        lines[e.range.start.line:e.range.end.line] = [e.new_text]
    return "".join(lines)


def _codes(diagnostics: list[Any]) -> list[str]:
    return sorted(str(d.code) for d in diagnostics)


async def _session_flow(root: Path) -> None:
    path = root / "train.py"
    path.write_text(TRAIN, encoding="utf-8")
    uri = path.as_uri()
    session = Session(root)
    await session.start()
    caps = session.capabilities
    assert caps.hover_provider and caps.code_action_provider
    client = session.client
    try:
        # open: diagnostics from the same engine as `traincheck lint`
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=TRAIN)))
        diags = await session.next_diagnostics(uri)
        assert _codes(diags) == ["TRN101", "TRN106", "TRN107", "TRN201"]
        by_code = {str(d.code): d for d in diags}
        softmax = by_code["TRN201"]
        assert softmax.source == "traincheck" and softmax.severity == types.DiagnosticSeverity.Error
        # `traincheck lint` says 6:26 (code points); the emoji before it is 2 UTF-16 units, 1 code point
        assert (softmax.range.start.line, softmax.range.start.character) == (5, 26)
        assert (softmax.range.end.line, softmax.range.end.character) == (5, 69)  # the whole call

        # quick fix for a safe fix: only that finding's line changes
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=by_code["TRN107"].range,
            context=types.CodeActionContext(diagnostics=[by_code["TRN107"]])))
        titles = [a.title for a in actions]
        fix = next(a for a in actions if a.title.startswith("Fix TRN107"))
        assert fix.kind == types.CodeActionKind.QuickFix and fix.is_preferred
        fixed = _apply(TRAIN, fix.edit.changes[uri])
        assert fixed == TRAIN.replace("clip_grad_norm(", "clip_grad_norm_(")
        assert "Suppress TRN107 on this line with # noqa" in titles
        assert "traincheck: fix all safe problems" in titles

        # an unsafe fix is offered, and labelled as such
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=by_code["TRN101"].range,
            context=types.CodeActionContext(diagnostics=[by_code["TRN101"]])))
        unsafe = next(a for a in actions if a.title.startswith("Fix TRN101"))
        assert "unsafe" in unsafe.title and not unsafe.is_preferred
        assert "opt.zero_grad()" in _apply(TRAIN, unsafe.edit.changes[uri])

        # suppress with noqa, then change the buffer: that finding is gone, the rest stay
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=softmax.range,
            context=types.CodeActionContext(diagnostics=[softmax])))
        noqa = next(a for a in actions if a.title == "Suppress TRN201 on this line with # noqa")
        suppressed = _apply(TRAIN, noqa.edit.changes[uri])
        assert "2 UTF-16 units  # noqa: TRN201\n" in suppressed
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=suppressed)]))
        assert _codes(await session.next_diagnostics(uri)) == ["TRN101", "TRN106", "TRN107"]

        # hover on a finding shows `traincheck explain`
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=8, character=12)))
        assert hover.contents.kind == types.MarkupKind.Markdown
        text = hover.contents.value
        assert text.startswith("# TRN106 ") and "\n# TRN107 deprecated-clip-grad-norm\n" in text
        assert text.index("# TRN107") < text.index("# TRN101 missing-zero-grad")  # the enclosing loop last
        nothing = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=0)))
        assert nothing is None

        # save after the configuration changed: the CLI's settings apply
        (root / "pyproject.toml").write_text('[tool.traincheck]\nignore = ["TRN107"]\n')
        client.text_document_did_save(types.DidSaveTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        assert _codes(await session.next_diagnostics(uri)) == ["TRN101", "TRN106"]

        # close: diagnostics cleared
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        assert list(await session.next_diagnostics(uri)) == []
    finally:
        await session.stop()


def test_a_client_session_over_stdio(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.traincheck]\n")
    asyncio.run(_session_flow(tmp_path))


def test_the_cli_agrees_with_the_server(tmp_path: Path) -> None:
    """`traincheck lint` on the saved file reports what the editor showed."""
    (tmp_path / "pyproject.toml").write_text("[tool.traincheck]\n")
    (tmp_path / "train.py").write_text(TRAIN, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-m", "pytest_traincheck", "lint", "--no-cache", "--output-format", "json",
                          "train.py"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120).stdout
    assert sorted(f["code"] for f in json.loads(out)) == ["TRN101", "TRN106", "TRN107", "TRN201"]


def test_line_edits_keep_to_the_finding() -> None:
    old = "a = f(1)\nb = 2\nc = f(3)\n"
    new = "a = g(1)\nb = 2\nc = g(3)\n"
    assert line_edits(old, new) == [(0, 1, "a = g(1)\n"), (2, 3, "c = g(3)\n")]
    assert line_edits(old, new, 3, 3) == [(2, 3, "c = g(3)\n")]
    assert line_edits("for x in y:\n    step()\n", "for x in y:\n    zero()\n    step()\n", 1, 2) == \
        [(1, 1, "    zero()\n")]


def test_noqa_edits() -> None:
    assert with_noqa("x = f(y)", "TRN201") == "x = f(y)  # noqa: TRN201"
    assert with_noqa("x = f(y)  # noqa: E501", "TRN201") == "x = f(y)  # noqa: E501, TRN201"
    assert with_noqa("x = f(y)  # noqa", "TRN201") == "x = f(y)  # noqa"
    assert with_noqa("x = f(y)  # noqa: TRN201", "TRN201") == "x = f(y)  # noqa: TRN201"
    text = 'x = f("""a\nb""")\ny = 1\n'
    assert noqa_line(text, Finding("t.py", 1, 1, 2, 5, "TRN201", "m")) == 2  # after the string closes


def test_server_without_pygls_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "pygls").mkdir()
    (blocker / "pygls" / "__init__.py").write_text("raise ImportError('no pygls here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(SRC)])}
    proc = subprocess.run([sys.executable, "-m", "pytest_traincheck", "server"], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "traincheck: error: traincheck server needs the `lsp` extra: pip install 'pytest-traincheck[lsp]' "
        "(pygls, lsprotocol)"]
