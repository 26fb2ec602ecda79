"""Peak memory of one call, measured in a fresh process: the one memory probe of the book.

:func:`peak_memory` starts ``python -m qattn.book.harness.memory`` with a *workload*: an importable
function named ``"module:function"`` and JSON keyword arguments. In the child the function builds
its inputs (models, tensors) and returns the callable to measure; the probe then resets the
peak, calls it once and reports the peak above the level just before the call:

- on CPU the peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``; Linux only);
- on CUDA (``device="cuda..."``) ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``.

With ``cap_bytes`` (CPU) the child's address space is limited (``RLIMIT_AS``) to its size after
importing the workload's module plus ``cap_bytes``, set before the inputs are built: a workload
that needs more fails there (``{"ok": False}``) instead of taking the machine's memory. A child
that runs past ``timeout`` seconds is killed and reported the same way.

Returns ``{"ok": True, "peak_bytes": int, "time_s": float}`` (``time_s``: the call's wall time)
or ``{"ok": False, "error": str}``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["peak_memory", "status_kb"]


def status_kb(field_name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``"VmRSS"``, ``"VmHWM"``, ``"VmSize"``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not found in /proc/self/status")


def _split(workload: str) -> tuple[str, str]:
    module_name, sep, attr = workload.partition(":") if isinstance(workload, str) else ("", "", "")
    if not (sep and module_name and attr):
        raise ValueError(f"workload must be 'module:function', got {workload!r}")
    return module_name, attr


def _resolve(workload: str) -> Callable[..., Callable[[], Any]]:
    module_name, attr = _split(workload)
    return getattr(importlib.import_module(module_name), attr)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def _child(workload: str, kwargs: dict[str, Any], device: str, threads: int | None, cap_bytes: int | None) -> dict[str, Any]:
    """Child-process body: build the workload, cap the address space, call it once, report the peak."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    build = _resolve(workload)  # imports its module before the cap: the cap is for the workload only
    cuda = device.startswith("cuda")
    if cap_bytes is not None and not cuda:
        limit = status_kb("VmSize") * 1024 + cap_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        fn = build(**kwargs)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            base = status_kb("VmRSS") * 1024
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if cuda else status_kb("VmHWM") * 1024
        return {"ok": True, "peak_bytes": peak - base, "time_s": elapsed}
    except (MemoryError, RuntimeError) as err:  # an allocation beyond the cap
        return {"ok": False, "error": _first_line(str(err)) or type(err).__name__}


def peak_memory(
    workload: str,
    kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    cap_bytes: int | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Peak extra memory (bytes) of one call of ``workload(**kwargs)()`` in a fresh process.

    Parameters
    ----------
    workload : ``"module:function"``, importable in this process (the child gets this process's
        ``sys.path``); ``function(**kwargs)`` builds the inputs and returns the callable to measure
    kwargs : JSON-serialisable keyword arguments of ``function``
    device : ``"cpu"`` (peak resident set) or ``"cuda..."`` (peak allocated by torch)
    threads : torch intra-op threads (and ``OMP_NUM_THREADS``) of the child; default unchanged
    cap_bytes : CPU only: address space allowed beyond the child's size before the inputs are built
    timeout : seconds before the child is killed

    Returns
    -------
    ``{"ok": True, "peak_bytes", "time_s"}`` or ``{"ok": False, "error"}``.
    """
    _split(workload)
    if cap_bytes is not None and cap_bytes <= 0:
        raise ValueError(f"cap_bytes must be positive, got {cap_bytes!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    spec = {"workload": workload, "kwargs": dict(kwargs or {}), "device": device, "threads": threads, "cap_bytes": cap_bytes}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "qattn.book.harness.memory", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"ok": False, "error": (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:200]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m qattn.book.harness.memory '<spec JSON>'`` prints one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(_child(**json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
