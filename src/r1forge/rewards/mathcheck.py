"""Math answer equivalence: an exact fast path for plain numbers, math-verify for the rest.

math-verify can hang on adversarial LaTeX, and its own timeout relies on SIGALRM, which only
works on the main thread, while rewards run in trainer threads. So it runs in a persistent
worker subprocess that the parent waits on with a timeout and kills (then restarts) on expiry.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_CHARS = 1000
# Importing sympy on a loaded machine can take seconds; that is not the answer's fault.
_STARTUP_TIMEOUT = 60.0
_WORKER_SCRIPT = Path(__file__).with_name("_mathworker.py")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+/\d+|\d+(?:\.\d*)?|\.\d+)")


def plain_number(text: str) -> Fraction | None:
    """Exact value of an int, decimal or a/b fraction (optional sign), else None."""
    text = text.strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except ZeroDivisionError:
        return None


class MathWorker:
    """A lazily started math-verify subprocess shared by all threads, one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def equal(self, gold: str, pred: str, timeout: float) -> bool:
        """Whether math-verify deems `pred` equal to `gold`; False on timeout or worker failure."""
        request = (json.dumps([gold, pred]) + "\n").encode()
        with self._lock:
            try:
                proc = self._ensure_started()
                assert proc.stdin is not None
                proc.stdin.write(request)
                proc.stdin.flush()
                return self._read_line(time.monotonic() + timeout) == b"1"
            except Exception as exc:
                # Timeout, crash or a broken pipe: the worker's state is unknown, so replace it.
                logger.info("math worker failed (%r); restarting it", exc)
                self._stop()
                return False

    def close(self) -> None:
        """Stop the worker (it would also exit by itself on EOF when we exit)."""
        with self._lock:
            self._stop()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self._proc = subprocess.Popen(
            # -P: do not put this directory on sys.path (its modules would shadow others).
            [sys.executable, "-P", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if self._read_line(time.monotonic() + _STARTUP_TIMEOUT) != b"ready":
            raise RuntimeError("math worker did not start")
        return self._proc

    def _read_line(self, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("math worker timed out")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError("math worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _stop(self) -> None:
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    def _forget_after_fork(self) -> None:
        """In a forked child the worker belongs to the parent: drop it without killing it."""
        self._lock = threading.Lock()
        self._proc = None
        self._buffer = b""


_WORKER = MathWorker()
atexit.register(_WORKER.close)
os.register_at_fork(after_in_child=_WORKER._forget_after_fork)


def math_equal(gold: str, pred: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `pred` (a boxed answer's content) is mathematically equal to `gold`."""
    pred = pred.strip()
    if not pred or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold_value, pred_value = plain_number(gold), plain_number(pred)
    if gold_value is not None and pred_value is not None:
        return gold_value == pred_value
    return _WORKER.equal(gold.strip(), pred, timeout)
