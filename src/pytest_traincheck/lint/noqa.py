"""``# noqa`` comments, parsed the way flake8 does."""

from __future__ import annotations

import re
import tokenize
from io import StringIO
from typing import Optional

# flake8: "# noqa", "# noqa: X1, Y2", "# NOQA:X1 Y2"; anything after the codes is a comment.
_NOQA = re.compile(
    r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?",
    re.IGNORECASE,
)

# line number -> None (blanket noqa) or the set of code prefixes it names
NoqaMap = dict[int, Optional[frozenset[str]]]


def parse_noqa(source: str) -> NoqaMap:
    """Map each line that carries a noqa comment to the codes it suppresses."""
    result: NoqaMap = {}
    if "noqa" not in source.lower():
        return result
    try:
        tokens = list(tokenize.generate_tokens(StringIO(source).readline))
        comments = [(tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        comments = [(i, line[line.index("#"):]) for i, line in enumerate(source.splitlines(), 1) if "#" in line]
    for line, comment in comments:
        match = _NOQA.search(comment)
        if match is None:
            continue
        codes = match.group("codes")
        if codes is None:
            result[line] = None
        else:
            result[line] = frozenset(c.upper() for c in re.split(r"[,\s]+", codes) if c)
    return result


def suppressed(noqa: NoqaMap, line: int, code: str) -> bool:
    """True if a noqa comment on ``line`` covers ``code`` (exactly or as a prefix)."""
    if line not in noqa:
        return False
    codes = noqa[line]
    return codes is None or any(code.startswith(c) for c in codes)
