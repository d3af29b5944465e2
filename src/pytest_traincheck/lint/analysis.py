"""Analyse one file: parse it once, run every enabled rule in one traversal, apply fixes.

This is the half of the engine that needs libcst; ``engine`` imports it only
when a file must actually be linted, so a run answered from the cache never
loads the parser or the rules.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import gc
import io
import re
import tokenize
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from pytest_traincheck.lint.findings import Finding
from pytest_traincheck.lint import fixer
from pytest_traincheck.lint.rule import RawFinding, Rule
from pytest_traincheck.lint.context import FileContext, ImportTracker
from pytest_traincheck.lint import engine
from pytest_traincheck.lint.engine import FileResult, Settings, syntax_finding
from pytest_traincheck.analyses.dataflow import CallSites, Tracker
from pytest_traincheck.analyses.distributed import SaveSites
from pytest_traincheck.analyses.facts import FactsCollector, FileFacts
from pytest_traincheck.lint.noqa import parse_noqa, suppressed
from pytest_traincheck.lint.walk import walk

# Beyond these, libcst's parser becomes too slow (super-linear on huge files and long
# operator chains) or crashes (deep nesting): such files are reported, not linted.
MAX_FILE_BYTES = engine.MAX_FILE_BYTES
MAX_LINE_CHARS = 20_000
MAX_NESTING = 200  # CPython's own limit for nested brackets
# libcst recurses once per level of nesting in Python code (positions, traversal) and in its native
# parser: `a + a + ... + a` 350 deep exhausts Python's recursion limit, 20,000 `not`s its C stack.
# Like the bracket limit (CPython's MAXLEVEL), this is far beyond hand-written code.
MAX_DEPTH = 200
# A file that imports another deep-learning framework and never mentions torch is that
# framework's code (d2l ships mxnet.py and tensorflow.py twins of its torch.py): not linted.
_OTHER_FRAMEWORK = re.compile(rb"^\s*(?:import|from)\s+(?:mxnet|tensorflow|jax|keras|paddle|mindspore|oneflow)\b",
                              re.MULTILINE)
_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+(\.*)([\w.]*)[ \t]+import|import[ \t]+([\w.]+))", re.MULTILINE)
# Words a file must contain for the facts pass to learn anything about its classes.
FACTS_TRIGGERS = ("torch", "nn.", "Module", "softmax", "sigmoid", "LSTM", "GRU", "RNN")


def decode_problem(data: bytes) -> Optional[str]:
    """Return why ``data`` cannot be linted as Python text, or None."""
    if len(data) > MAX_FILE_BYTES:
        return f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB (generated code?); not linted"
    if b"\x00" in data:
        return "file contains NUL bytes (binary?); not linted"
    longest = max((len(line) for line in data.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        return f"a line is {longest} characters long (generated code?); not linted"
    if _nesting(data) > MAX_NESTING:
        try:
            ast.parse(data)
        except SyntaxError as exc:  # CPython refuses it too: report its words
            return f"SyntaxError: {exc.msg}"
        except (ValueError, RecursionError, MemoryError):
            pass
        return f"brackets nested deeper than {MAX_NESTING} levels; not linted"
    return None


def _nesting(data: bytes) -> int:
    """Return the deepest bracket nesting, counting brackets inside strings too (an upper bound)."""
    brackets = data.translate(None, _NOT_BRACKETS)
    if len(brackets) <= MAX_NESTING:
        return 0
    depth = deepest = 0
    for byte in brackets:
        if byte in _OPENING:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif depth:
            depth -= 1
    return deepest


_OPENING = frozenset(b"([{")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"()[]{}")


def cpython_problem(path: str, data: bytes) -> tuple[Optional[Finding], Optional[ast.AST]]:
    """Compile ``data`` with the running CPython; return its complaint as a TRN000 finding, and its tree.

    The tree is None when CPython could not parse the file at all (a finding then says why).
    Files over the size limit are left to ``decode_problem``.
    """
    if len(data) > MAX_FILE_BYTES:
        return None, None
    if b"\x00" in data:
        return syntax_finding(path, 1, 1, "file contains NUL bytes (binary?); not linted"), None
    flags = ast.PyCF_ONLY_AST | (ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if path.endswith(".ipynb") else 0)
    # The tree is hundreds of thousands of objects with no cycles: collecting garbage while it is
    # built only walks them again and again (it tripled the cost), and reference counts free it.
    with _no_gc(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning for "\d" and the like: not ours to print
        try:
            tree = compile(data, path, "exec", flags, dont_inherit=True)
        except SyntaxError as exc:
            return _cpython_finding(path, exc), None
        except (RecursionError, MemoryError):
            return syntax_finding(path, 1, 1, "SyntaxError: nested too deeply for Python to compile"), None
        except ValueError as exc:  # "source code string cannot contain null bytes"
            return syntax_finding(path, 1, 1, f"SyntaxError: {exc}"), None
        try:  # the compiler's own checks: `return` outside a function, a misplaced __future__ import
            compile(tree, path, "exec", flags & ~ast.PyCF_ONLY_AST, dont_inherit=True)
        except SyntaxError as exc:
            return _cpython_finding(path, exc), tree
        except (RecursionError, MemoryError, ValueError):
            return syntax_finding(path, 1, 1, "SyntaxError: nested too deeply for Python to compile"), tree
    return None, tree


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a block that only allocates acyclic objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _cpython_finding(path: str, exc: SyntaxError) -> Finding:
    name = type(exc).__name__  # SyntaxError, IndentationError, TabError
    if exc.msg.startswith("(unicode error)"):
        return syntax_finding(path, exc.lineno or 1, exc.offset or 1, f"cannot decode file: {exc.msg[16:]}")
    return syntax_finding(path, exc.lineno or 1, exc.offset or 1, f"{name}: {exc.msg}")


def ast_depth(tree: ast.AST, limit: int) -> int:
    """Return how deep libcst will nest ``tree`` (without recursing), stopping once past ``limit``.

    Counted as libcst builds them, not as CPython does: `a and b and c` is one flat `BoolOp` for
    CPython but a chain of binary operations for libcst, and `import a.b.c` a chain of attributes;
    9,000 of either crash libcst's native parser (SIGSEGV) while CPython's tree stays shallow.
    """
    # Level by level: no tuple per node, and ``_fields`` read directly (ast.iter_child_nodes is a
    # generator over a generator, three times slower on large files).
    node_type, list_type, boolean, imports = ast.AST, list, ast.BoolOp, (ast.Import, ast.ImportFrom)
    level: list[ast.AST] = [tree]
    depth = deepest = 0
    extra_below: dict[int, int] = {}  # nesting libcst adds above a node (inside boolean chains), by id
    while level and deepest <= limit:
        depth += 1
        deepest = max(deepest, depth)
        below: list[ast.AST] = []
        for node in level:
            extra = extra_below.get(id(node), 0) if extra_below else 0
            if isinstance(node, boolean):
                extra += len(node.values) - 2  # n operands: n - 1 nested operations, one is this level
            elif isinstance(node, imports):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                deepest = max(deepest, depth + extra + max(name.count(".") for name in names))
            if extra > 0:
                deepest = max(deepest, depth + extra)
            first = len(below)
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, node_type):
                    below.append(value)
                elif isinstance(value, list_type):
                    below.extend(item for item in value if isinstance(item, node_type))
            if extra > 0:  # not to the shared singleton leaves (`Load`, `And`): other places use them too
                for child in below[first:]:
                    if not isinstance(child, _SINGLETONS):
                        extra_below[id(child)] = extra
                    else:  # a leaf: its depth is known now
                        deepest = max(deepest, depth + 1 + extra)
        level = below
    return deepest


_SINGLETONS = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop)


def _longest_statement(data: bytes) -> int:
    """Return the most tokens in one logical line (a bound on its nesting), or a huge number if unknown."""
    longest = count = 0
    try:
        for token in tokenize.tokenize(io.BytesIO(data).readline):
            count += 1
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                longest, count = max(longest, count), 0
    except (SyntaxError, tokenize.TokenError, UnicodeDecodeError, LookupError, ValueError):
        return 1 << 30
    return longest


def parse(path: str, data: bytes, tree: Optional[ast.AST] = None) -> tuple[Optional[cst.Module], Optional[Finding]]:
    """Parse ``data`` with libcst, turning every failure into a finding.

    ``tree`` is CPython's tree of the same file when it compiles: its depth is bounded first. A
    file CPython compiles but libcst cannot read is valid Python: TRN002, never a syntax error.
    """
    problem = decode_problem(data)
    if problem:
        return None, syntax_finding(path, 1, 1, problem)
    if tree is not None:
        with _no_gc():
            depth = ast_depth(tree, MAX_DEPTH)
        if depth > MAX_DEPTH:
            return None, syntax_finding(path, 1, 1, f"code nested more than {MAX_DEPTH} levels deep (a generated "
                                                    f"expression?); not linted")
    elif _longest_statement(data) > 2 * MAX_DEPTH:
        return None, syntax_finding(path, 1, 1, f"a statement longer than {2 * MAX_DEPTH} tokens; not linted")
    try:
        return cst.parse_module(data), None
    except cst.ParserSyntaxError as exc:
        if tree is not None:
            return None, unparsed_finding(path, f"libcst (the linter's parser) cannot read line {exc.raw_line}")
        message = str(exc).splitlines()[0] if str(exc) else "invalid syntax"
        return None, syntax_finding(path, exc.raw_line, exc.raw_column + 1, f"SyntaxError: {message}")
    except (UnicodeDecodeError, LookupError) as exc:
        return None, syntax_finding(path, 1, 1, f"cannot decode file: {exc}")
    except RecursionError:
        return None, syntax_finding(path, 1, 1, "code nested too deeply to parse; not linted")
    except Exception as exc:  # libcst raises assorted errors on exotic input
        if tree is not None:
            return None, unparsed_finding(path, f"libcst (the linter's parser) cannot read it ({type(exc).__name__})")
        return None, syntax_finding(path, 1, 1, f"cannot parse: {type(exc).__name__}: {exc}")


def _imports_torch_code(path: str, data: bytes) -> bool:
    """Return True if a file that never names torch may still hold torch code.

    A fragment with no imports may be anything; a file with imports is torch code only when it
    imports a module of its own project (relative, or a sibling file) that names torch. NumPy's
    ``a.transpose().view(MaskedArray)`` or a text library's ``evaluate()`` are not.
    """
    imports = _IMPORT.findall(data)
    if not imports:
        return True
    folder = Path(path).parent
    for dots, source, plain in imports:
        name = (source or plain).decode("ascii", "replace")
        base = folder
        for _ in range(max(len(dots) - 1, 0)):
            base = base.parent
        parts = [p for p in name.split(".") if p]
        candidates = [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")] if parts else []
        if dots and not parts:
            return True  # ``from . import x``: a sibling we cannot name cheaply, so assume it may be torch
        for candidate in candidates:
            try:
                if candidate.is_file() and b"torch" in candidate.read_bytes()[:1_000_000]:
                    return True
            except OSError:
                continue
    return False


def unparsed_finding(path: str, why: str) -> Finding:
    """Return a TRN002 finding: valid Python that the linter could not read, so not linted."""
    return Finding(path, 1, 1, 1, 1, "TRN002", f"valid Python, but {why}; not linted", severity="warning")


def _triggered(rules: Sequence[type[Rule]], text: str) -> list[type[Rule]]:
    return [r for r in rules if not r.TRIGGERS or any(t in text for t in r.TRIGGERS)]


def build_visitors(context: FileContext, rules: Sequence[type[Rule]],
              facts: Optional[FactsCollector] = None) -> list[cst.BatchableCSTVisitor]:
    """Build ``rules`` on ``context``, preceded by the import tracker, ``facts`` and the analyses they read."""
    instances = [rule(context) for rule in rules]
    kinds = dict.fromkeys(kind for rule in rules for kind in rule.ANALYSES)
    first: list[cst.BatchableCSTVisitor] = [ImportTracker(context)] + ([facts] if facts is not None else [])
    if facts is None:
        return [*first, *(context.shared(kind) for kind in kinds), *instances]
    kinds.setdefault(Tracker)  # the call sites record what the tracker knows each argument holds
    calls = CallSites(facts.context, facts.facts)
    # Which functions save on every rank (TRN712 across files): only a file that mentions saving can.
    saves = [SaveSites(facts.context, facts.facts)] if "save" in context.source else []
    return [*first, *(context.shared(kind) for kind in kinds), calls, *saves, *instances]


def _traverse(context: FileContext, rules: Sequence[type[Rule]]) -> tuple[FileFacts, list[str]]:
    """Run the import tracker, the facts collector, the shared analyses and ``rules`` in one traversal."""
    facts = FactsCollector(context)
    try:
        walk(context.module, build_visitors(context, rules, facts))
        return facts.facts, []
    except RecursionError:
        raise
    except Exception:
        pass
    # Some rule raised: run each rule alone, on a fresh context so that no state the failed
    # traversal left behind leaks in, to keep the others' findings and name the culprit.
    failed: list[str] = []
    context.raw.clear()
    facts = FactsCollector(context.fresh())
    walk(context.module, build_visitors(facts.context, [], facts))
    for rule in rules:
        alone = context.fresh()
        try:
            walk(context.module, build_visitors(alone, [rule]))
        except Exception as exc:
            failed.append(f"{rule.CODE} ({rule.__name__}) raised {type(exc).__name__}: {exc}")
            continue
        context.raw.extend(alone.raw)
    return facts.facts, failed


def _to_finding(context: FileContext, raw: RawFinding, fixable: bool) -> Finding:
    pos = context.wrapper.resolve(PositionProvider)[raw.node]
    rule = raw.rule
    return Finding(
        path=context.path,
        line=pos.start.line,
        column=pos.start.column + 1,
        end_line=pos.end.line,
        end_column=pos.end.column + 1,
        code=rule.CODE,
        message=raw.message,
        fixable=fixable,
        fix_title=rule.FIX_TITLE,
        severity=rule.SEVERITY,
        unsafe_fix=raw.fix is not None and not rule.FIX_SAFE,
    )


def _file_ignores(settings: Settings, path: str) -> list[str]:
    codes: list[str] = []
    for pattern, ignored in settings.per_file_ignores.items():
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(Path(path).name, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            codes.extend(ignored)
    return codes


def _can_fix(raw: RawFinding, settings: Settings) -> bool:
    return raw.fix is not None and (raw.rule.FIX_SAFE or settings.unsafe_fixes)


def analyse(path: str, data: bytes, settings: Settings) -> tuple[FileResult, Optional[cst.Module], list[RawFinding]]:
    """Lint one file's bytes; return the result, the tree and the raw findings kept."""
    result = FileResult(path)
    rejected, tree = cpython_problem(path, data)
    if rejected is not None and tree is not None:
        result.findings.append(rejected)  # the compiler refuses it under every Python version
        return result, None, []
    text = data.decode("utf-8", errors="replace")
    rules = _triggered(settings.rules(), text)
    needs_facts = any(t in text for t in FACTS_TRIGGERS)
    if b"torch" not in data and (_OTHER_FRAMEWORK.search(data) or not _imports_torch_code(path, data)):
        rules, needs_facts = [], False
    if not rules and not needs_facts and rejected is None:
        return result, None, []  # nothing could fire: skip the parse
    module, error = parse(path, data, tree)
    if rejected is not None and (module is None or error is not None):
        result.findings.append(rejected)  # CPython's words: libcst cannot read it either
        return result, None, []
    if error is not None:
        result.findings.append(error)  # a file that does not parse is always reported
        return result, None, []
    if not rules and not needs_facts:
        return result, None, []  # newer syntax than the running Python, read by libcst: fine
    context = FileContext(path, text, module, MetadataWrapper(module, unsafe_skip_copy=True), settings.torch_version)
    try:
        facts, failures = _traverse(context, rules)
    except RecursionError:
        result.findings.append(syntax_finding(path, 1, 1, "expression nesting too deep to analyse"))
        return result, None, []
    result.facts = facts
    for failure in failures:
        result.internal_error = True
        result.findings.append(Finding(path, 1, 1, 1, 1, "TRN001", f"internal error: {failure}"))
    noqa = parse_noqa(text) if context.raw else {}  # most files have nothing to suppress: skip the tokenizer
    ignored = _file_ignores(settings, path)
    kept: list[RawFinding] = []
    for raw in context.raw:
        finding = _to_finding(context, raw, fixable=_can_fix(raw, settings))
        if any(finding.code.startswith(c) for c in ignored):
            continue
        if suppressed(noqa, finding.line, finding.code) or suppressed(noqa, finding.end_line, finding.code):
            continue
        kept.append(raw)
        if raw.condition is None:
            result.findings.append(finding)
        else:
            result.deferred.append((finding, raw.condition))
    return result, module, kept


def lint_bytes(path: str, data: bytes, settings: Settings) -> FileResult:
    """Lint one file, applying fixes first when ``settings.fix`` is on; one too deep becomes one TRN000."""
    try:
        # One file's trees are mostly acyclic and freed by reference counts; the cycles it leaves
        # (the context and its rules) are collected once, after the file, instead of the collector
        # walking the young tree again every few hundred allocations while it is being built.
        with _no_gc():
            return _lint_and_fix(path, data, settings)
    except RecursionError:  # positions, a rule or the fixer recursing on code the bounds let through
        return FileResult(path, findings=[syntax_finding(path, 1, 1, "code nested too deeply to analyse; not linted")])


def _lint_and_fix(path: str, data: bytes, settings: Settings) -> FileResult:
    result, module, kept = analyse(path, data, settings)
    if not settings.fix or module is None:
        return result
    fixed_total = 0
    current = data
    for _ in range(fixer.MAX_ROUNDS):
        fixes = [raw for raw in kept if _can_fix(raw, settings) and raw.condition is None]
        if not fixes or module is None:
            break
        new_source = fixer.apply(module, fixes)
        if new_source is None or new_source.encode(module.encoding) == current:
            break
        fixed_total += len(fixes)
        current = new_source.encode(module.encoding)
        result, module, kept = analyse(path, current, settings)
    if fixed_total:
        encoding = module.encoding if module is not None else "utf-8"
        result.fixed_source = current.decode(encoding)
        result.encoding = encoding
        result.fixed = fixed_total
    return result
