"""Errors a user can cause. The library raises these; only the CLI prints them and exits.

Exit codes are distinct per family so scripts can tell a typo from a missing process:
  2  usage error (bad option or pattern, nothing matched)
  3  target error (missing file, not ELF, corrupt ELF, no such process, permission denied)
  4  environment error (not root, no BPF, no kernel headers, bcc missing)
  5  tracing error (compile or attach failed at run time)
  6  output error (standard output closed, disk full, any failed write of the trace)
A reader that goes away (a broken pipe: `utrace ... | head -1`) is not an error: tracing stops, the
summary goes to stderr, and the exit code is 0.
"""

from __future__ import annotations


class UtraceError(Exception):
    """Base class: a message for one clear line on stderr and the exit code to use."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(UtraceError):
    exit_code = 2


class NotFoundError(UsageError):
    """A symbol, probe or pattern that matched nothing; carries close names as suggestions."""

    def __init__(self, message: str, suggestions: list[str] | None = None) -> None:
        self.suggestions = list(suggestions or [])
        hint = ("did you mean: " + ", ".join(self.suggestions)) if self.suggestions else None
        super().__init__(message, hint=hint)


class TargetError(UtraceError):
    exit_code = 3


class ElfError(TargetError):
    """The file is not ELF, or is truncated or corrupt."""


class EnvironmentProblem(UtraceError):
    exit_code = 4


class TracingError(UtraceError):
    exit_code = 5


class OutputError(UtraceError):
    """The trace cannot be written: standard output closed, no space left, a write error.

    `closed`: the reader went away (EPIPE); the session stops as at the end of --duration.
    """

    exit_code = 6

    def __init__(self, message: str, *, closed: bool = False) -> None:
        super().__init__(message)
        self.closed = closed
