"""Jupyter notebooks: lint the code cells as one module, map findings back, splice fixes in.

The code cells are joined in notebook order, one separator comment between
cells, with IPython magics, shell escapes and help queries replaced by a
``pass`` placeholder at the same indentation (line numbers stay put). Fixes are
written back by replacing only the ``source`` value of each changed cell in the
notebook's own text, so every byte outside the changed cells (outputs,
metadata, key order, indentation) stays as it was. ``nbformat`` (the
``notebook`` extra), when installed, validates the fixed notebook before it is
written; the notebook is read with the standard ``json`` module so that the
positions of the cells in the file are known.
"""

from __future__ import annotations

import json
import re
import tokenize
import warnings
from dataclasses import dataclass, field, replace
from io import StringIO
from typing import TYPE_CHECKING, Optional

from pytest_traincheck.lint.findings import Finding

if TYPE_CHECKING:  # pragma: no cover
    from pytest_traincheck.lint.engine import FileResult, Settings

SUFFIX = ".ipynb"
SEPARATOR = "# traincheck: cell {}"
PLACEHOLDER = "pass  # traincheck: ipython"
_SEPARATOR = re.compile(r"^# traincheck: cell (\d+)$")
_ASSIGN_MAGIC = re.compile(r"^[\w.,\s()\[\]]+=\s*[!%]")  # files = !ls, t = %timeit -o f()
_HELP = re.compile(r"^(?:\?{1,2}[\w.]+|[\w.]+\?{1,2})$")  # ?obj, obj?, obj??
_DECODER = json.JSONDecoder()


class NotebookError(Exception):
    """The file is not a notebook traincheck can read; the message says why."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.line, self.column = line, column


@dataclass
class Cell:
    """One code cell: its place in the notebook and in the file's text."""

    number: int  # 1-based among all cells, as editors count them
    source: str
    span: tuple[int, int]  # the `source` value's character offsets in the file's text
    items: list[int]  # the text offset of each source line's JSON string (one for a plain string)
    as_list: bool
    skipped: bool = False  # a cell magic (%%bash, %%writefile ...): not Python
    magic_lines: list[str] = field(default_factory=list)


@dataclass
class Notebook:
    """A parsed notebook and the Python module built from its code cells."""

    text: str
    cells: list[Cell]
    module: str = ""
    starts: list[tuple[int, Cell]] = field(default_factory=list)  # module line of each cell's first line

    def locate(self, line: int) -> tuple[Optional[Cell], int]:
        """Map a module line to (cell, line in the cell)."""
        found: tuple[Optional[Cell], int] = (None, line)
        for start, cell in self.starts:
            if line >= start:
                found = (cell, line - start + 1)
        return found

    def file_line(self, cell: Cell, line: int) -> int:
        """Return the line of the file's text on which ``line`` of ``cell`` is stored."""
        index = min(line - 1, len(cell.items) - 1) if cell.as_list else 0
        offset = cell.items[index] if cell.items else cell.span[0]
        return self.text.count("\n", 0, offset) + 1


def is_notebook(path: str) -> bool:
    """True if ``path`` names a Jupyter notebook."""
    return path.lower().endswith(SUFFIX)


# -- reading -------------------------------------------------------------------------------------


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _members(text: str, i: int):  # type: ignore[no-untyped-def]
    """Yield (key, value start) of the JSON object at ``i``; the caller must consume each value."""
    i = _skip_ws(text, i)
    if text[i] != "{":
        raise NotebookError("expected a JSON object")
    i = _skip_ws(text, i + 1)
    if text[i] == "}":
        return
    while True:
        key, i = _DECODER.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] != ":":
            raise NotebookError("malformed JSON object")
        start = _skip_ws(text, i + 1)
        i = yield key, start
        i = _skip_ws(text, i)
        if text[i] == "}":
            return
        i = _skip_ws(text, i + 1)  # the comma


def _object_spans(text: str, i: int) -> dict[str, tuple[int, int]]:
    """Return each key's value span in the JSON object at ``i``."""
    spans: dict[str, tuple[int, int]] = {}
    members = _members(text, i)
    try:
        key, start = next(members)
        while True:
            _, end = _DECODER.raw_decode(text, start)
            spans[key] = (start, end)
            key, start = members.send(end)
    except StopIteration:
        pass
    return spans


def _array_items(text: str, start: int, end: int) -> list[int]:
    """Return the offset of each item of the JSON array spanning ``start:end``."""
    offsets = []
    i = _skip_ws(text, start + 1)
    while i < end and text[i] != "]":
        offsets.append(i)
        _, i = _DECODER.raw_decode(text, i)
        i = _skip_ws(text, i)
        if text[i] == ",":
            i = _skip_ws(text, i + 1)
    return offsets


def read(data: bytes) -> Notebook:
    """Parse a notebook's bytes; raise ``NotebookError`` if it is not a v4 notebook."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotebookError(f"notebook is not UTF-8: {exc.reason}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotebookError(f"notebook is not valid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        version = document.get("nbformat") if isinstance(document, dict) else None
        hint = f" (nbformat {version}; open and save it in Jupyter to upgrade)" if version else ""
        raise NotebookError(f"not a Jupyter notebook with a `cells` list{hint}")
    top = _object_spans(text, 0)
    cells_start, cells_end = top["cells"]
    cells: list[Cell] = []
    for number, (offset, cell) in enumerate(zip(_array_items(text, cells_start, cells_end), document["cells"]), 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        spans = _object_spans(text, offset)
        raw = cell.get("source", "")
        if "source" not in spans or not (isinstance(raw, str) or all(isinstance(s, str) for s in raw)):
            continue
        as_list = isinstance(raw, list)
        span = spans["source"]
        items = _array_items(text, *span) if as_list else [span[0]]
        cells.append(Cell(number, "".join(raw) if as_list else raw, span, items, as_list))
    notebook = Notebook(text, cells)
    _build_module(notebook)
    return notebook


def cell_sources(path: str, text: str) -> dict[str, str]:
    """Return ``{"path#cellN": source}`` for a notebook's code cells (code frames); empty otherwise."""
    if not is_notebook(path):
        return {}
    try:
        notebook = read(text.encode("utf-8"))
    except (NotebookError, ValueError):
        return {}
    return {f"{path}#cell{cell.number}": cell.source for cell in notebook.cells}


# -- the module ----------------------------------------------------------------------------------


def _complete(text: str) -> bool:
    """True if ``text`` ends a logical line (no open bracket, string or continuation)."""
    try:
        for _ in tokenize.generate_tokens(StringIO(text).readline):
            pass
    except tokenize.TokenError:
        return False
    except (SyntaxError, IndentationError):
        return True
    return True


def _is_ipython(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    return stripped[0] in "%!?" or bool(_ASSIGN_MAGIC.match(stripped)) or bool(_HELP.match(stripped))


def python_lines(cell: Cell) -> list[str]:
    """Return the cell's lines with IPython syntax replaced by placeholders (recording the originals)."""
    lines = cell.source.splitlines()
    cell.magic_lines = []
    if lines and lines[0].lstrip().startswith("%%"):
        cell.skipped = True
        return [""] * len(lines)
    out: list[str] = []
    pending = ""
    for line in lines:
        if not pending and _is_ipython(line):
            cell.magic_lines.append(line)
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + PLACEHOLDER)
            continue
        out.append(line)
        pending += line + "\n"
        if _complete(pending):
            pending = ""
    return out


def _build_module(notebook: Notebook) -> None:
    parts: list[str] = []
    line = 1
    for cell in notebook.cells:
        parts.append(SEPARATOR.format(cell.number))
        line += 1
        notebook.starts.append((line, cell))
        body = python_lines(cell)
        parts.extend(body)
        line += len(body)
    notebook.module = "\n".join(parts) + "\n" if parts else ""


# -- findings ------------------------------------------------------------------------------------


def map_finding(notebook: Notebook, finding: Finding) -> Finding:
    """Move a finding from module coordinates to its cell (and its line of the file's text)."""
    cell, line = notebook.locate(finding.line)
    if cell is None:  # before the first cell: only a whole-file TRN000 can be there
        return replace(finding, line=1, column=1, end_line=1, end_column=1)
    end_cell, end_line = notebook.locate(finding.end_line)
    end_column = finding.end_column
    if end_cell is not cell:
        end_line, end_column = max(1, len(cell.source.splitlines())), 1
    message = finding.message
    if finding.code == "TRN000":  # libcst names the module's line and column: meaningless here
        message = re.sub(r" @ \d+:\d+", "", message)
    return replace(
        finding, message=message, line=line, end_line=max(end_line, line), end_column=end_column, cell=cell.number,
        file_line=notebook.file_line(cell, line), file_end_line=notebook.file_line(cell, max(end_line, line)),
    )


# -- writing fixes -------------------------------------------------------------------------------


def _split_fixed(notebook: Notebook, fixed: str) -> Optional[dict[int, str]]:
    """Split a fixed module back into cell sources; None if the cell boundaries did not survive."""
    bodies: dict[int, list[str]] = {}
    current: Optional[list[str]] = None
    for line in fixed.split("\n"):
        match = _SEPARATOR.match(line)
        if match:
            current = bodies.setdefault(int(match.group(1)), [])
            continue
        if current is None:
            if line.strip():
                return None  # a fix put code above the first cell
            continue
        current.append(line)
    if sorted(bodies) != sorted(c.number for c in notebook.cells):
        return None
    out: dict[int, str] = {}
    for cell in notebook.cells:
        lines = bodies[cell.number]
        if cell is notebook.cells[-1] and lines and lines[-1] == "":
            lines = lines[:-1]  # the module's final newline
        out[cell.number] = "\n".join(lines)
    return out


def _restore(cell: Cell, body: str) -> Optional[str]:
    """Put the cell's IPython lines back in place of the placeholders; keep its trailing newline."""
    lines = body.split("\n")
    magics = iter(cell.magic_lines)
    restored = []
    for line in lines:
        if line.strip() == PLACEHOLDER:
            original = next(magics, None)
            if original is None:
                return None
            restored.append(original)
        else:
            restored.append(line)
    if next(magics, None) is not None:
        return None  # a fix removed a magic line: do not guess
    text = "\n".join(restored)
    if cell.source.endswith("\n") and not text.endswith("\n"):
        text += "\n"
    elif not cell.source.endswith("\n"):
        text = text.rstrip("\n")
    return text


def _source_json(notebook: Notebook, cell: Cell, source: str) -> str:
    """Serialise a new ``source`` value in the style of the one it replaces."""
    ascii_only = "\\u" in notebook.text[cell.span[0]:cell.span[1]] and notebook.text.isascii()
    if not cell.as_list:
        return json.dumps(source, ensure_ascii=ascii_only)
    lines = source.splitlines(keepends=True)
    items = [json.dumps(line, ensure_ascii=ascii_only) for line in lines]
    old = notebook.text[cell.span[0]:cell.span[1]]
    if len(cell.items) >= 2:  # reuse the original layout: opening, separator, closing
        first_end = _DECODER.raw_decode(notebook.text, cell.items[0])[1]
        last_end = _DECODER.raw_decode(notebook.text, cell.items[-1])[1]
        opening = notebook.text[cell.span[0]:cell.items[0]]
        separator = notebook.text[first_end:cell.items[1]]
        closing = notebook.text[last_end:cell.span[1]]
    else:  # Jupyter's own layout, indented one step deeper than the cell's keys
        line_start = notebook.text.rfind("\n", 0, cell.span[0]) + 1
        indent = re.match(r"[ \t]*", notebook.text[line_start:]).group(0)  # type: ignore[union-attr]
        opening, separator, closing = f"[\n{indent} ", f",\n{indent} ", f"\n{indent}]"
        if "\n" not in old and len(cell.items) == 1:
            opening, separator, closing = "[", ", ", "]"
    if not items:
        return "[]"
    return opening + separator.join(items) + closing


def apply_fixes(notebook: Notebook, fixed_module: str) -> Optional[str]:
    """Return the notebook's text with the changed cells' sources replaced, or None if unsafe."""
    bodies = _split_fixed(notebook, fixed_module)
    if bodies is None:
        return None
    edits: list[tuple[int, int, str]] = []
    for cell in notebook.cells:
        if cell.skipped:
            continue
        source = _restore(cell, bodies[cell.number])
        if source is None:
            return None
        if source != cell.source:
            edits.append((cell.span[0], cell.span[1], _source_json(notebook, cell, source)))
    text = notebook.text
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    if not _still_valid(notebook.text, text):
        return None
    return text


def _still_valid(before: str, after: str) -> bool:
    """Check the rewritten notebook: valid JSON, and valid per nbformat if the original was."""
    try:
        document = json.loads(after)
    except json.JSONDecodeError:
        return False
    try:
        import nbformat
    except ImportError:  # the `notebook` extra is absent: the JSON check above is all there is
        return True

    def valid(doc: object) -> bool:
        try:
            with warnings.catch_warnings():  # e.g. "cell is missing an id": not ours to report
                warnings.simplefilter("ignore")
                nbformat.validate(nbformat.from_dict(doc))
        except Exception:  # nbformat raises ValidationError, or KeyError on odd shapes
            return False
        return True

    return valid(document) or not valid(json.loads(before))


def lint_notebook(path: str, data: bytes, settings: "Settings") -> "FileResult":
    """Lint a notebook's code cells as one module; with ``settings.fix``, rewrite the changed cells."""
    from dataclasses import replace as with_fields

    from pytest_traincheck.lint.analysis import lint_bytes
    from pytest_traincheck.lint.engine import FileResult, syntax_finding

    try:
        notebook = read(data)
    except NotebookError as exc:
        return FileResult(path, findings=[syntax_finding(path, exc.line, exc.column, str(exc))])
    result = lint_bytes(path, notebook.module.encode("utf-8"), settings)
    if result.fixed_source is not None:
        text = apply_fixes(notebook, result.fixed_source)
        if text is None:  # the fixes cannot be put back cell by cell: report, change nothing
            result = lint_bytes(path, notebook.module.encode("utf-8"), with_fields(settings, fix=False))
        else:
            result.fixed_source, result.encoding = text, "utf-8"
    result.findings = [map_finding(notebook, f) for f in result.findings]
    result.deferred = [(map_finding(notebook, f), condition) for f, condition in result.deferred]
    return result
