"""The ``traincheck`` command: lint, rules, explain, data, server."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Callable, NoReturn, Optional, Sequence

from pytest_traincheck import __version__
from pytest_traincheck.usage import EXIT_CLEAN, EXIT_ERROR, EXIT_FINDINGS, UsageError

__all__ = ["COMMANDS", "EXIT_CLEAN", "EXIT_ERROR", "EXIT_FINDINGS", "UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _add_lint(sub: "argparse._SubParsersAction[_Parser]") -> None:
    from pytest_traincheck.lint.formats import format_names

    lint = sub.add_parser("lint", help="find training mistakes in Python files without running them")
    lint.add_argument("paths", nargs="*", type=Path, default=None,
                      help="files or folders to lint (default: the current folder); '-' reads standard input")
    lint.add_argument("--fix", action="store_true", help="apply safe fixes in place")
    lint.add_argument("--unsafe-fixes", action="store_true", help="also apply fixes that may change behaviour")
    lint.add_argument("--diff", action="store_true", help="print the fixes as a unified diff; change no file")
    lint.add_argument("--output-format", choices=format_names(), default="text",
                      help="text/concise (one line each), full (with code frames), json, github, sarif, junit")
    lint.add_argument("--select", help="only these codes or prefixes, comma-separated (e.g. TRN1,TRN201)")
    lint.add_argument("--ignore", help="skip these codes or prefixes")
    lint.add_argument("--extend-select", help="add these codes to the selection (e.g. off-by-default rules)")
    lint.add_argument("--exclude", type=lambda v: v.split(","), help="replace the excluded patterns")
    lint.add_argument("--extend-exclude", type=lambda v: v.split(","), help="add excluded patterns")
    lint.add_argument("--config", type=Path, help="read settings from this pyproject.toml or traincheck.toml")
    lint.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    lint.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    lint.add_argument("-q", "--quiet", action="store_true", help="print findings only, no summary line")
    lint.add_argument("--statistics", action="store_true", help="print the number of findings per code")
    lint.add_argument("--stdin-filename", help="the name to report for code read from standard input")
    lint.add_argument("--jobs", "-j", type=int, default=None,
                      help="worker processes (default: the number of cores; one or two files run serially)")
    lint.add_argument("--cache-dir", type=Path, default=None,
                      help="where per-file results are cached (default: .traincheck_cache beside the config)")
    lint.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    lint.set_defaults(handler=_run_lint)


def _stdin_lint(args: argparse.Namespace, config: object) -> int:
    from pytest_traincheck.lint.findings import LintSummary
    from pytest_traincheck.lint.formats import render
    from pytest_traincheck.lint import engine

    data = sys.stdin.buffer.read()
    shown = args.stdin_filename or "-"
    settings = engine.settings_from(config, fix=args.fix or args.diff, unsafe_fixes=args.unsafe_fixes)  # type: ignore[arg-type]
    result = engine.lint_bytes(shown, data, settings)
    summary = LintSummary(findings=engine.settle([result]), files_checked=1, fixed=result.fixed)
    if args.fix and not args.diff:
        # With --fix on stdin, the fixed code goes to stdout, like ruff and black: the bytes file
        # --fix would write (its encoding, BOM and line endings).
        sys.stdout.flush()
        sys.stdout.buffer.write(data if result.fixed_source is None else result.fixed_source.encode(result.encoding))
        sys.stdout.flush()
        return EXIT_CLEAN
    if args.diff:
        _print_diff(shown, data, result.fixed_source, result.encoding)
        return _diff_exit(args, bool(result.fixed_source), summary.findings)
    sys.stdout.write(render(summary, args.output_format, _format_options(args, {shown: data.decode("utf-8", "replace")})))
    return EXIT_FINDINGS if summary.findings and not args.exit_zero else EXIT_CLEAN


def _format_options(args: argparse.Namespace, sources: Optional[dict[str, str]] = None) -> object:
    from pytest_traincheck.lint.findings import FormatOptions

    return FormatOptions(statistics=args.statistics, quiet=args.quiet, sources=sources, unsafe_fixes=args.unsafe_fixes)


def _diff_exit(args: argparse.Namespace, fixes: bool, remaining: Sequence[object]) -> int:
    """Exit 1 when there is a fix to apply or a finding no fix covers, saying so on stderr."""
    if remaining:  # findings without a fix are never silent: stdout stays a pure diff
        n = len(remaining)
        verb, pronoun = ("problem has", "it") if n == 1 else ("problems have", "them")
        print(f"{n} {verb} no fix to show: run `traincheck lint` without --diff to see {pronoun}.", file=sys.stderr)
    if args.exit_zero:
        return EXIT_CLEAN
    return EXIT_FINDINGS if fixes or remaining else EXIT_CLEAN


def _print_diff(shown: str, old_bytes: bytes, new: Optional[str], encoding: str = "utf-8") -> None:
    """Print a patch that turns the file's bytes into what --fix writes (same encoding and line endings)."""
    if new is None:
        return
    # A BOM stays a character of the first line, so that the patch's context matches the file.
    bom = encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig")
    text_encoding = "utf-8" if bom else encoding
    old = old_bytes.decode(text_encoding, "replace")
    new = ("\ufeff" if bom else "") + new
    if new == old:
        return
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{shown}", f"b/{shown}")
    sys.stdout.flush()
    sys.stdout.buffer.write("".join(lines).encode(text_encoding, "replace"))
    sys.stdout.flush()


def _load_config(args: argparse.Namespace, paths: Sequence[Path]) -> object:
    from pytest_traincheck.config import LintConfig, load_config, override

    if args.isolated:
        config = LintConfig()
    else:
        start = paths[0] if paths and str(paths[0]) != "-" and paths[0].exists() else Path.cwd()
        config = load_config(args.config, start=start)
    return override(
        config,
        select=args.select,
        ignore=args.ignore,
        extend_select=args.extend_select,
        exclude=args.exclude,
        extend_exclude=args.extend_exclude,
    )


def _run_lint(args: argparse.Namespace) -> int:
    from pytest_traincheck.lint.formats import render
    from pytest_traincheck.lint import engine

    paths = list(args.paths or [Path(".")])
    config = _load_config(args, paths)
    if [str(p) for p in paths] == ["-"]:
        return _stdin_lint(args, config)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    jobs = args.jobs or engine.default_jobs()
    cache_dir = None if args.no_cache else (args.cache_dir or config.root / ".traincheck_cache")  # type: ignore[attr-defined]
    if cache_dir is not None and args.cache_dir is None and cache_dir.is_symlink():
        cache_dir = None  # the default cache folder links elsewhere: not ours to write into unless named
    unwritten = False
    summary, results, by_name = engine.lint_paths(paths, config, fix=args.fix or args.diff,  # type: ignore[arg-type]
                                                  unsafe_fixes=args.unsafe_fixes, jobs=jobs, cache_dir=cache_dir,
                                                  isolate=True)  # a parser crash costs one file, at -j1 too
    for result in results:
        if result.fixed_source is None:
            continue
        path = by_name[result.path]
        if args.diff:
            _print_diff(result.path, path.read_bytes(), result.fixed_source, result.encoding)
            continue
        from pytest_traincheck.lint.fixer import write_atomic  # only a run that fixed something loads libcst

        try:
            write_atomic(path, result.fixed_source, result.encoding)
        except OSError as exc:  # read-only, or a folder we cannot create the temporary file in
            print(f"traincheck: error: {result.path}: cannot write the fixes: {exc.strerror}", file=sys.stderr)
            summary.fixed -= result.fixed
            unwritten = True
    if args.diff:
        return _diff_exit(args, bool(summary.fixed), summary.findings)
    sources = None
    if args.output_format == "full":
        sources = _sources(summary.findings, by_name)
    elif args.output_format == "junit":
        sources = {shown: "" for shown in by_name}  # one test case per linted file, clean ones too
    sys.stdout.write(render(summary, args.output_format, _format_options(args, sources)))
    if summary.internal_errors or unwritten:
        return EXIT_ERROR
    return EXIT_FINDINGS if summary.findings and not args.exit_zero else EXIT_CLEAN


def _sources(findings: Sequence[object], by_name: dict[str, Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in {f.path for f in findings}:  # type: ignore[attr-defined]
        path = by_name.get(name)
        if path is not None:
            try:
                out[name] = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            from pytest_traincheck.lint.notebook import cell_sources

            out.update(cell_sources(name, out[name]))
    return out


def _run_rules(args: argparse.Namespace) -> int:
    from pytest_traincheck.lint.docs import rule_rows, rules_markdown

    if args.format == "markdown":
        print(rules_markdown(), end="")
        return EXIT_CLEAN
    rows = [("code", "name", "lint", "fix", "sanity", "summary")]
    rows += [r for r in rule_rows() if not args.static or r[2] != "-"]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
    return EXIT_CLEAN


def _run_explain(args: argparse.Namespace) -> int:
    from pytest_traincheck import catalog
    from pytest_traincheck.harness.manifest import check_docs
    from pytest_traincheck.lint.registry import all_rules

    code = args.code.upper()
    if code not in catalog.CATALOG:
        code = catalog.SLUGS.get(args.code.lower(), code)
    if code not in catalog.CATALOG:
        raise UsageError(f"unknown rule or check {args.code!r}; `traincheck rules` lists them")
    entry = catalog.CATALOG[code]
    print(f"# {entry.code} {entry.slug}\n")
    rule = next((r for r in all_rules() if r.CODE == code), None)
    halves = []
    if rule is not None and rule.docs():
        halves.append(("`traincheck lint` (static rule)", rule.docs()))
    if check_docs(code):
        halves.append(("`pytest --train-sanity` (dynamic check)", check_docs(code)))
    if not halves:
        print(entry.summary)
        print(f"\n## Fix\n{entry.fix}")
    for title, docs in halves:
        if len(halves) > 1:
            print(f"# {title}\n")
        print(docs + ("\n" if len(halves) > 1 else ""))
    if entry.seed:
        print(f"\nFrom the seed guide: \"{entry.seed}\".")
    return EXIT_CLEAN


def _add_rules(sub: "argparse._SubParsersAction[_Parser]") -> None:
    rules = sub.add_parser("rules", help="list every rule and check with its code")
    rules.add_argument("--static", action="store_true", help="only the lint rules")
    rules.add_argument("--format", choices=("table", "markdown"), default="table",
                       help="table for people, markdown for the README")
    rules.set_defaults(handler=_run_rules)


def _add_explain(sub: "argparse._SubParsersAction[_Parser]") -> None:
    explain = sub.add_parser("explain", help="print the documentation of one rule or check")
    explain.add_argument("code", help="a code such as TRN101, or a slug such as missing-zero-grad")
    explain.set_defaults(handler=_run_explain)


def _add_data(sub: "argparse._SubParsersAction[_Parser]") -> None:
    from pytest_traincheck.data.cli import add_parser  # its module imports nothing heavy until it runs

    add_parser(sub)  # type: ignore[arg-type]


def _run_server(args: argparse.Namespace) -> int:
    from pytest_traincheck.lsp import LspMissing, main as serve

    try:
        return serve()
    except LspMissing as exc:
        raise UsageError(str(exc)) from None


def _add_server(sub: "argparse._SubParsersAction[_Parser]") -> None:
    server = sub.add_parser("server", help="run the Language Server over stdio (editors; needs the `lsp` extra)")
    server.set_defaults(handler=_run_server)


# The command table: every subcommand, in `--help` order, with the function that adds its parser.
COMMANDS: dict[str, Callable[["argparse._SubParsersAction[_Parser]"], None]] = {
    "lint": _add_lint,
    "rules": _add_rules,
    "explain": _add_explain,
    "data": _add_data,
    "server": _add_server,
}


def build_parser() -> _Parser:
    """Build the argument parser of every subcommand."""
    parser = _Parser(prog="traincheck", description="Catch the silent mistakes of PyTorch training code.")
    parser.add_argument("--version", action="version", version=f"traincheck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit code."""
    from pytest_traincheck.config import ConfigError
    from pytest_traincheck.lint.discovery import PathError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(args.handler(args))
    except (UsageError, ConfigError, PathError) as exc:
        print(f"traincheck: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("traincheck: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_CLEAN
    except Exception as exc:  # pragma: no cover - the last line of defence
        print(f"traincheck: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
