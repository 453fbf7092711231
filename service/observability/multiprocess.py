"""Prometheus multiprocess files that cannot take a worker down when their filesystem is full.

prometheus_client keeps each worker's values in memory-mapped files in `PROMETHEUS_MULTIPROC_DIR`
and sizes them with `ftruncate`, which makes sparse files: on a full filesystem the first write to
a page not yet backed by disk raises SIGBUS, and the worker dies (then every replacement, at its
first write). Here each file is preallocated (`posix_fallocate`) when it is created and before it
grows, so a full filesystem is an `OSError` at that moment, never a signal later; a value whose
file cannot be created or grown is kept in memory (so not exported) and the worker keeps serving.
A failure is reported to the hook set by `on_write_error` (the service logs the first of an
outage and counts each in `autogen_metrics_write_errors_total`); values in memory try their file
again at most every `RETRY_INTERVAL_S` and are exported again once it can be written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict

RETRY_INTERVAL_S = 30.0

WriteErrorHook = Callable[[OSError], None]
_hook: WriteErrorHook | None = None
_reporting = threading.local()
_retry_at = 0.0


def _reserve(fd: int, size: int) -> None:
    """Back `size` bytes of the file with disk blocks now: ENOSPC here instead of SIGBUS later."""
    os.posix_fallocate(fd, 0, size)


class PreallocatedMmapedDict(MmapedDict):
    """prometheus_client's `MmapedDict` whose file never has pages without disk blocks behind them."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    _reserve(fd, max(size, _INITIAL_MMAP_SIZE))
                except OSError:
                    if size == 0:
                        # An empty file would break every scrape (the collector reads its header).
                        os.unlink(filename)
                    raise
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        # The entry's size as `MmapedDict._init_value` lays it out (length, padded key, two doubles).
        encoded = len(key.encode("utf-8"))
        needed = self._used + 4 + encoded + (8 - (encoded + 4) % 8) + 16
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity > self._capacity:
            _reserve(self._f.fileno(), capacity)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def _report(exc: OSError) -> None:
    global _retry_at
    _retry_at = time.monotonic() + RETRY_INTERVAL_S
    if _hook is None or getattr(_reporting, "active", False):
        return  # (counting the failure may fail too: no recursion)
    _reporting.active = True
    try:
        _hook(exc)
    finally:
        _reporting.active = False


def _degradable(file_backed: type[Any]) -> type[Any]:
    """A `values.ValueClass` that uses `file_backed` when its file can be written, memory otherwise."""

    class DegradableValue:
        _multiprocess = True
        _degradable = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._args, self._kwargs = args, kwargs
            self._inner: Any
            try:
                self._inner = file_backed(*args, **kwargs)
                self._in_memory = False
            except OSError as exc:
                self._inner = values.MutexValue(*args, **kwargs)  # type: ignore[no-untyped-call]
                self._in_memory = True
                _report(exc)

        def _retry_file(self) -> None:
            if time.monotonic() < _retry_at:
                return
            try:
                inner = file_backed(*self._args, **self._kwargs)
            except OSError as exc:
                _report(exc)
                return
            inner.set(self._inner.get())
            self._inner, self._in_memory = inner, False

        def _write(self, method: str, *args: Any) -> None:
            if self._in_memory:
                self._retry_file()
            try:
                getattr(self._inner, method)(*args)
            except OSError as exc:  # a file reopened after a fork could not be created
                current = self._inner.get()
                self._inner = values.MutexValue(*self._args, **self._kwargs)  # type: ignore[no-untyped-call]
                self._in_memory = True
                self._inner.set(current)
                getattr(self._inner, method)(*args)
                _report(exc)

        def inc(self, amount: float) -> None:
            self._write("inc", amount)

        def set(self, value: float, timestamp: float | None = None) -> None:
            self._write("set", value, timestamp)

        def set_exemplar(self, exemplar: Any) -> None:
            self._inner.set_exemplar(exemplar)

        def get(self) -> float:
            value: float = self._inner.get()
            return value

        def get_exemplar(self) -> Any:
            return self._inner.get_exemplar()

    return DegradableValue


def install(hook: WriteErrorHook) -> None:
    """Make this process's multiprocess metric values safe on a full filesystem (idempotent).

    Does nothing unless prometheus_client runs in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set
    when it was imported). `hook` receives each write failure.
    """
    global _hook
    _hook = hook
    current = values.ValueClass
    if getattr(current, "_multiprocess", False) and not getattr(current, "_degradable", False):
        # The file-backed value class looks `MmapedDict` up in its module when it opens a file.
        values.MmapedDict = PreallocatedMmapedDict  # type: ignore[attr-defined]
        values.ValueClass = _degradable(current)
