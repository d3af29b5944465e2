"""Allow ``python -m pytest_traincheck``."""

from __future__ import annotations

from pytest_traincheck.cli import main

raise SystemExit(main())
