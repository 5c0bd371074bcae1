"""Run model-written Python against tests in a throwaway, resource-limited subprocess.

This is containment for buggy or greedy code (infinite loops, memory hogs, floods of
output, stray network calls), not a security boundary against a determined attacker: run
untrusted training data in a container as well.

Each test runs in a fresh `python -I` in its own temp dir and session. The limits (CPU,
address space, file size, processes) are set by a preamble inside the child rather than a
`preexec_fn`, which is unsafe in a threaded parent such as a trainer and forces a slow
fork of its whole address space. The preamble also installs an audit hook that refuses
sockets and process creation; where `unshare -n` works the child has no network at all.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_OUTPUT_BYTES = 65536
POOL_WORKERS = 2
# Wall-clock slack over the CPU limit: interpreter start-up, sleeping code, a busy machine.
_WALL_FACTOR = 2.0
_WALL_SLACK = 1.0
_NO_NETWORK_WRAPPERS = (("unshare", "-n"), ("unshare", "-rn"))

_PREAMBLE = """\
import resource, sys
def _limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass
_limit(resource.RLIMIT_CPU, {cpu})
_limit(resource.RLIMIT_AS, {memory})
_limit(resource.RLIMIT_FSIZE, {fsize})
_limit(resource.RLIMIT_CORE, 0)
_limit(resource.RLIMIT_NPROC, 0)
_BLOCKED = frozenset((
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
    "socket.sendto", "socket.sendmsg", "os.system", "os.fork", "os.forkpty",
    "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
))
def _audit(event, args):
    if event in _BLOCKED:
        raise PermissionError("sandbox: " + event + " is not allowed")
sys.addaudithook(_audit)
def _main():
    import os
    token = os.environ.pop("R1FORGE_SANDBOX_TOKEN", "")
    sources = []
    for name in ("solution.py", "tests.py") if token else ("solution.py",):
        with open(name, encoding="utf-8") as f:  # read both before the solution can edit them
            sources.append(compile(f.read(), name, "exec"))
    scope = {{"__name__": "__main__", "__builtins__": __builtins__}}
    for source in sources:
        exec(source, scope)
    if token:
        sys.stdout.write("\\n" + token + "\\n")
        sys.stdout.flush()
del _limit, _audit, resource
_main()
"""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits, from the reward's params."""

    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Limits:
        return cls(
            timeout=float(params.get("timeout", DEFAULT_TIMEOUT)),
            memory_mb=int(params.get("memory_mb", DEFAULT_MEMORY_MB)),
            max_output_bytes=int(params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)),
        )


@functools.cache
def network_wrapper() -> tuple[str, ...]:
    """The first `unshare` prefix that works here (a new, empty network namespace), or ()."""
    for wrapper in _NO_NETWORK_WRAPPERS:
        try:
            probe = subprocess.run([*wrapper, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return wrapper
    logger.warning("unshare -n is unavailable: sandboxed code keeps network access")
    return ()


def run_test(code: str, test: str | dict[str, Any], limits: Limits) -> bool:
    """Whether `code` passes one test: an assert snippet (str) or {"input", "output"} (stdio).

    An assert test passes only if the tests ran to the end and printed a per-run secret, so
    code that exits early with status 0 (`sys.exit(0)`, `os._exit(0)`) does not pass.
    """
    try:
        if isinstance(test, str):
            token = secrets.token_hex(16)
            stdout = _run(code, "", limits, tests=test, token=token)
            return stdout is not None and stdout.rstrip("\n").endswith("\n" + token)
        stdout = _run(code, str(test.get("input", "")), limits)
        return stdout is not None and _normalise(stdout) == _normalise(str(test["output"]))
    except Exception:
        logger.debug("sandbox run failed", exc_info=True)
        return False


def pass_fractions(
    codes: list[str | None], tests: list[list[str | dict[str, Any]]], limits: Limits
) -> list[float]:
    """Fraction of its tests each code passes (0 without code or tests), two runs at a time."""
    jobs = [
        (i, code, test)
        for i, (code, its_tests) in enumerate(zip(codes, tests, strict=True))
        if code is not None
        for test in its_tests
    ]
    passed = [0] * len(codes)
    with ThreadPoolExecutor(max_workers=POOL_WORKERS) as pool:
        results = pool.map(lambda job: run_test(job[1], job[2], limits), jobs)
        for (i, _, _), ok in zip(jobs, results, strict=True):
            passed[i] += ok
    return [p / len(t) if t else 0.0 for p, t in zip(passed, tests, strict=True)]


def _normalise(output: str) -> str:
    """Stripped output with trailing spaces and Windows newlines ignored on every line."""
    return "\n".join(line.rstrip() for line in output.strip().splitlines())


def _run(source: str, stdin: str, limits: Limits, tests: str = "", token: str = "") -> str | None:
    """Stdout of running `source` (then `tests` if a token is given), or None on failure.

    Failure is a non-zero exit, a timeout, or more than `max_output_bytes` of output.
    """
    cpu = max(1, round(limits.timeout))
    preamble = _PREAMBLE.format(
        cpu=cpu, memory=limits.memory_mb << 20, fsize=limits.max_output_bytes + 1
    )
    with tempfile.TemporaryDirectory(prefix="r1forge-sandbox-", ignore_cleanup_errors=True) as d:
        work = Path(d)
        for name, text in (("solution.py", source), ("tests.py", tests), ("stdin.txt", stdin)):
            (work / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "R1FORGE_SANDBOX_TOKEN": token,
        }
        command = [*network_wrapper(), sys.executable, "-I", "-c", preamble]
        # stdout goes to a file, so RLIMIT_FSIZE caps it and no reader thread is needed.
        with open(work / "stdin.txt", "rb") as fin, open(work / "stdout.txt", "wb") as fout:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdin=fin,
                stdout=fout,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                status = proc.wait(timeout=cpu * _WALL_FACTOR + _WALL_SLACK)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so the group id cannot have been reused: safe to kill.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None
        if status != 0:
            return None
        with open(work / "stdout.txt", "rb") as fout:
            out = fout.read(limits.max_output_bytes + 1)
        if len(out) > limits.max_output_bytes:
            return None
        return out.decode("utf-8", errors="replace")
