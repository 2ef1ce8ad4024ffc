"""utrace: a userspace application tracer for language runtimes, on BPF."""

from __future__ import annotations

__version__ = "0.1.0"
