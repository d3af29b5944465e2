"""What every `traincheck` command shares: its exit codes and the one-line usage error."""

from __future__ import annotations

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user asked for: one line on stderr, exit 2."""
