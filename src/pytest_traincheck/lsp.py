"""`traincheck server`: a Language Server over stdio (pygls), on the same engine and settings as the CLI.

Diagnostics are published on open, change and save; each finding with a fix
offers it as a quick fix (fixes that may change behaviour are labelled
unsafe), every finding offers "suppress with # noqa", the file offers
"fix all safe problems", and hovering a finding shows ``traincheck explain``.
Settings come from the nearest ``traincheck.toml`` / ``pyproject.toml`` above
the file, exactly as ``traincheck lint FILE`` reads them.
"""

from __future__ import annotations

import difflib
import io
import re
import tokenize
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import unquote, urlparse

from pytest_traincheck import __version__
from pytest_traincheck.lint.findings import Finding

INSTALL_HINT = "traincheck server needs the `lsp` extra: pip install 'pytest-traincheck[lsp]' (pygls, lsprotocol)"
SOURCE = "traincheck"
FIX_ALL_KIND = "source.fixAll.traincheck"
_NOQA = re.compile(r"#\s*noqa(?::\s?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.IGNORECASE)


class LspMissing(ImportError):
    """pygls or lsprotocol is not installed."""


# -- the engine, without the protocol ------------------------------------------------------------


def uri_path(uri: str) -> Optional[Path]:
    """Return the local path of a ``file:`` URI, or None for other schemes (unsaved buffers)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return Path(unquote(parsed.path))


def _settings(path: Optional[Path], *, fix: bool = False, unsafe: bool = False,
              codes: Optional[Sequence[str]] = None) -> tuple[Any, str]:
    """Return engine settings from the configuration above ``path``, and the name the CLI would show."""
    from pytest_traincheck.config import ConfigError, LintConfig, load_config
    from pytest_traincheck.lint import engine

    try:
        config = load_config(None, start=path.parent if path is not None else Path.cwd())
    except ConfigError:
        config = LintConfig()  # a broken config must not silence the editor; the CLI reports it
    settings = engine.settings_from(config, fix=fix, unsafe_fixes=unsafe)
    if codes is not None:
        settings = replace(settings, codes=tuple(c for c in settings.codes if c in codes) or tuple(codes))
    shown = "untitled.py"
    if path is not None:
        try:
            shown = path.resolve().relative_to(Path(config.root).resolve()).as_posix()
        except ValueError:
            shown = path.as_posix()
    return settings, shown


def lint_text(text: str, path: Optional[Path]) -> list[Finding]:
    """Lint an editor buffer as ``traincheck lint`` would lint the saved file."""
    from pytest_traincheck.lint import engine

    settings, shown = _settings(path)
    result = engine.lint_bytes(shown, text.encode("utf-8"), settings)
    return engine.settle([result])


def fixed_text(text: str, path: Optional[Path], *, unsafe: bool = False,
               code: Optional[str] = None) -> Optional[str]:
    """Return the buffer with the fixes applied (only ``code``'s when given), or None if nothing changes."""
    from pytest_traincheck.lint import engine

    settings, shown = _settings(path, fix=True, unsafe=unsafe, codes=[code] if code else None)
    result = engine.lint_bytes(shown, text.encode("utf-8"), settings)
    if result.fixed_source is None or result.fixed_source == text:
        return None
    return result.fixed_source


def line_edits(old: str, new: str, first: int = 1, last: Optional[int] = None) -> list[tuple[int, int, str]]:
    """Return ``(start line, end line, replacement)`` edits (0-based, end exclusive) turning old into new.

    With ``first``/``last`` (1-based lines of a finding), only the changes that touch those
    lines are kept: one finding's fix, not every fix of its code in the file.
    """
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    edits = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if last is not None and (i2 < first - 1 or i1 > last):
            continue  # another finding's fix
        edits.append((i1, i2, "".join(b[j1:j2])))
    return edits


def noqa_line(text: str, finding: Finding) -> int:
    """Return the 1-based line that takes the noqa comment: the finding's, unless a string continues past it."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING and token.start[0] <= finding.line < token.end[0]:
                return token.end[0]
    except (tokenize.TokenError, SyntaxError):
        pass
    return finding.line


def with_noqa(line: str, code: str) -> str:
    """Return ``line`` (no newline) with ``code`` added to its noqa comment, or a new one."""
    match = _NOQA.search(line)
    if match is None:
        return f"{line.rstrip()}  # noqa: {code}"
    if match.group("codes") is None:
        return line  # a blanket noqa already covers it
    start, end = match.span("codes")
    return f"{line[:end]}, {code}{line[end:]}" if code not in match.group("codes").upper() else line


def explain(code: str) -> str:
    """Return the text of ``traincheck explain CODE``."""
    import argparse
    import contextlib

    from pytest_traincheck.cli import _run_explain

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _run_explain(argparse.Namespace(code=code))
    return out.getvalue()


# -- the server ----------------------------------------------------------------------------------


def build_server() -> Any:
    """Build the pygls server with every feature registered (raise `LspMissing` without pygls)."""
    try:
        from lsprotocol import types
        from pygls.lsp.server import LanguageServer
    except ImportError:
        raise LspMissing(INSTALL_HINT) from None

    server = LanguageServer("traincheck", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full)
    findings: dict[str, list[Finding]] = {}

    def client_range(doc: Any, line: int, column: int, end_line: int, end_column: int) -> Any:
        start = doc.position_to_client_units(types.Position(line=max(line - 1, 0), character=max(column - 1, 0)))
        end = doc.position_to_client_units(types.Position(line=max(end_line - 1, 0), character=max(end_column - 1, 0)))
        return types.Range(start=start, end=end)

    def diagnostic(doc: Any, f: Finding) -> Any:
        severity = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}.get(
            f.severity, types.DiagnosticSeverity.Information)
        return types.Diagnostic(
            range=client_range(doc, f.line, f.column, f.end_line, f.end_column), message=f.message,
            severity=severity, code=f.code, source=SOURCE,
            code_description=types.CodeDescription(href=f"https://pypi.org/project/pytest-traincheck/#{f.code.lower()}"),
            data={"fixable": f.fixable, "unsafe": f.unsafe_fix, "fix_title": f.fix_title or "",
                  "line": f.line, "end_line": f.end_line})

    def publish(uri: str) -> None:
        doc = server.workspace.get_text_document(uri)
        path = uri_path(uri)
        if path is not None and path.suffix == ".ipynb":
            return  # notebooks: `traincheck lint` on the saved file
        try:
            found = lint_text(doc.source, path)
        except Exception as exc:  # noqa: BLE001 - a crash must not take the editor's server down
            server.window_log_message(types.LogMessageParams(type=types.MessageType.Error,
                                                             message=f"traincheck: {type(exc).__name__}: {exc}"))
            found = []
        findings[uri] = found
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
            uri=uri, version=doc.version, diagnostics=[diagnostic(doc, f) for f in found]))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: Any, params: Any) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: Any, params: Any) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: Any, params: Any) -> None:
        publish(params.text_document.uri)  # the configuration may have changed beside it

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: Any, params: Any) -> None:
        uri = params.text_document.uri
        findings.pop(uri, None)
        server.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    def edit(uri: str, doc: Any, changes: list[tuple[int, int, str]]) -> Any:
        text_edits = [types.TextEdit(range=types.Range(start=types.Position(line=i1, character=0),
                                                       end=types.Position(line=i2, character=0)), new_text=new)
                      for i1, i2, new in changes]
        return types.WorkspaceEdit(changes={uri: text_edits})

    def whole(text: str) -> tuple[int, int]:
        return 0, len(text.splitlines(keepends=True))

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix, types.CodeActionKind.SourceFixAll, FIX_ALL_KIND]))
    def code_action(ls: Any, params: Any) -> list[Any]:
        uri = params.text_document.uri
        doc = server.workspace.get_text_document(uri)
        path, text = uri_path(uri), doc.source
        if not text.endswith("\n") and text:
            text_nl = text + "\n"  # whole-line edits below need a final newline to anchor on
        else:
            text_nl = text
        actions: list[Any] = []
        wanted = params.context.only
        for diag in params.context.diagnostics:
            if diag.source != SOURCE or not isinstance(diag.data, dict):
                continue
            code, data = str(diag.code), diag.data
            first, last = int(data.get("line", diag.range.start.line + 1)), int(data.get("end_line", diag.range.end.line + 1))
            if (data.get("fixable") or data.get("unsafe")) and (not wanted or types.CodeActionKind.QuickFix in wanted):
                unsafe = not data.get("fixable")
                new = fixed_text(text_nl, path, unsafe=unsafe, code=code)
                changes = line_edits(text_nl, new, first, last) if new is not None else []
                if changes:
                    label = f"Fix {code}: {data.get('fix_title') or 'apply the fix'}"
                    if unsafe:
                        label = f"Fix {code} (unsafe fix, may change behaviour: review it): {data.get('fix_title')}"
                    actions.append(types.CodeAction(title=label, kind=types.CodeActionKind.QuickFix,
                                                    diagnostics=[diag], is_preferred=not unsafe,
                                                    edit=edit(uri, doc, changes)))
            if not wanted or types.CodeActionKind.QuickFix in wanted:
                target = noqa_line(text_nl, Finding("", first, 1, last, 1, code, ""))
                lines = text_nl.splitlines(keepends=True)
                if 0 < target <= len(lines):
                    old = lines[target - 1]
                    body = old.rstrip("\r\n")
                    new_line = with_noqa(body, code) + old[len(body):]
                    if new_line != old:
                        actions.append(types.CodeAction(
                            title=f"Suppress {code} on this line with # noqa", kind=types.CodeActionKind.QuickFix,
                            diagnostics=[diag], edit=edit(uri, doc, [(target - 1, target, new_line)])))
        if any(f.fixable for f in findings.get(uri, [])) and (
                not wanted or any(str(k).startswith("source") for k in wanted)):
            new = fixed_text(text_nl, path)
            if new is not None:
                start, end = whole(text_nl)
                actions.append(types.CodeAction(title="traincheck: fix all safe problems", kind=FIX_ALL_KIND,
                                                edit=edit(uri, doc, [(start, end, new)])))
        return actions

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: Any, params: Any) -> Optional[Any]:
        uri = params.text_document.uri
        doc = server.workspace.get_text_document(uri)
        pos = doc.position_from_client_units(params.position)
        line, column = pos.line + 1, pos.character + 1
        here = [f for f in findings.get(uri, [])
                if (f.line, f.column) <= (line, column) <= (f.end_line, max(f.end_column, f.column))]
        if not here:
            return None
        # the innermost finding first: the call under the cursor before the loop around it
        here.sort(key=lambda f: (f.end_line - f.line, f.end_column - f.column if f.end_line == f.line else 0, f.code))
        texts = []
        for code in dict.fromkeys(f.code for f in here):
            try:
                texts.append(explain(code))
            except Exception as exc:  # noqa: BLE001 - an unknown code: say so, do not fail the hover
                texts.append(f"{code}: {exc}")
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown,
                                                        value="\n\n---\n\n".join(texts)))

    return server


def main() -> int:
    """Serve over stdin/stdout until the client says exit."""
    server = build_server()
    server.start_io()
    return 0
