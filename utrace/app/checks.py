"""`utrace doctor`: can tracing work on this machine, and if not, what to do about it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from utrace.bpf import backend, kernel


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _config_check(config: dict[str, str], keys: list[str], name: str) -> Check:
    if not config:
        return Check(name, True, "kernel config not readable; assuming support (the load test decides)")
    missing = [k for k in keys if config.get(k) not in ("y", "m")]
    if missing:
        return Check(
            name,
            False,
            "missing " + ", ".join(missing),
            "use a kernel built with " + ", ".join(missing),
        )
    return Check(name, True, ", ".join(f"{k}=y" for k in keys))


def run_checks(*, compile_test: bool = True) -> list[Check]:
    """Every check, in the order a person would fix them. Never raises."""
    checks: list[Check] = []
    root = os.geteuid() == 0
    caps_ok = kernel.can_trace_capabilities()  # enough to load programs (the tests below)
    problem = backend.privileges_problem()  # and to create uprobes
    checks.append(
        Check(
            "privileges",
            problem is None,
            ("root" if root else f"uid {os.geteuid()}")
            + (": may load BPF programs and create uprobes" if problem is None else f": {problem}"),
            "" if problem is None else "run utrace as root (sudo utrace ...)",
        )
    )
    config = kernel.kernel_config()
    checks.append(_config_check(config, ["CONFIG_BPF_SYSCALL", "CONFIG_BPF_EVENTS"], "kernel BPF support"))
    checks.append(_config_check(config, ["CONFIG_UPROBES", "CONFIG_UPROBE_EVENTS"], "kernel uprobes"))
    pmu = kernel.uprobe_pmu_type()
    checks.append(
        Check(
            "uprobe PMU",
            pmu is not None,
            f"perf type {pmu}, ref_ctr_offset {'supported' if kernel.uprobe_ref_ctr_supported() else 'missing'}"
            if pmu is not None
            else f"{kernel.UPROBE_PMU} is missing",
            "" if pmu is not None else "needs Linux >= 4.17 with CONFIG_UPROBE_EVENTS",
        )
    )
    if caps_ok:
        ok, detail = kernel.ringbuf_supported()
        checks.append(Check("BPF ring buffer", ok, detail, "" if ok else "needs Linux >= 5.8"))
    else:
        checks.append(Check("BPF ring buffer", False, "not tested without privileges", "run as root"))
    mounted = kernel.tracefs_mounted()
    if not mounted and root:
        mounted = kernel.ensure_tracefs()
        detail = "mounted it at /sys/kernel/tracing" if mounted else "not mounted and mounting failed"
    else:
        detail = "mounted at /sys/kernel/tracing" if mounted else "not mounted"
    checks.append(
        Check(
            "tracefs",
            mounted,
            detail,
            "" if mounted else "mount -t tracefs nodev /sys/kernel/tracing",
        )
    )
    bcc_ok, bcc_detail = backend.bcc_status()
    checks.append(
        Check(
            "bcc",
            bcc_ok,
            bcc_detail,
            "" if bcc_ok else "apt-get install python3-bpfcc libbpfcc, then run `make demo` (it sets up .venv)",
        )
    )
    hs = kernel.prepare_bcc_headers()
    checks.append(
        Check(
            "kernel headers",
            bool(hs.path),
            f"{hs.path} ({hs.how})"
            if hs.path
            else f"none for the running kernel, and no linux-headers package ({hs.how})",
            "" if hs.path else "apt-get install linux-headers-amd64 (any version works for uprobes)",
        )
    )
    if compile_test and bcc_ok and hs.path and caps_ok:
        ok, detail = backend.load_test()
        checks.append(Check("compile and load a uprobe program", ok, detail, "" if ok else "see the error above"))
    kernel.release_private_headers()
    return checks
