"""Check that two `traincheck lint --output-format json` outputs hold the same findings.

Run by hand around an engine change that must not change any finding:

    traincheck lint CORPUS --isolated --select ALL --output-format json --no-cache > before.json
    # ... apply the change ...
    traincheck lint CORPUS --isolated --select ALL --output-format json --no-cache > after.json
    python bench/same_findings.py before.json after.json

Exit 0 when the two documents are equal, 1 otherwise (the first differences are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def keyed(findings: list[dict[str, object]]) -> list[str]:
    """Return each finding as one canonical line, sorted (order-independent comparison)."""
    return sorted(json.dumps(finding, sort_keys=True) for finding in findings)


def main() -> int:
    """Compare the two files and print the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--show", type=int, default=20, help="how many differences to print per side")
    args = parser.parse_args()
    before, after = (json.loads(path.read_text(encoding="utf-8")) for path in (args.before, args.after))
    same = before == after
    print(f"{args.before}: {len(before)} findings; {args.after}: {len(after)} findings; "
          f"{'identical' if same else 'DIFFERENT'}")
    if not same:
        old, new = set(keyed(before)), set(keyed(after))
        for line in sorted(old - new)[:args.show]:
            print(f"only before: {line}")
        for line in sorted(new - old)[:args.show]:
            print(f"only after:  {line}")
        if old == new:
            print("same findings in another order")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
