"""Errors a user can cause. The library raises these; only the CLI prints them and exits.

Exit codes are distinct per family so scripts can tell a typo from a missing process:
  2  usage error (bad option or pattern, nothing matched)
  3  target error (missing file, not ELF, corrupt ELF, no such process, permission denied)
  4  environment error (not root, no BPF, no kernel headers, bcc missing)
  5  tracing error (compile or attach failed at run time)
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
