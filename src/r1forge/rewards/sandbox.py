"""Run model-written Python against tests in a throwaway, contained, resource-limited process.

Each test runs in a fresh interpreter inside its own pid, mount, network, IPC and UTS
namespaces (as root; other users add a user namespace). A small shell holding the
namespaces' privileges is their init: it mounts a minimal root (a read-only tmpfs holding
read-only, nosuid bind mounts of /usr, the /lib* and /bin directories and the base
interpreter's prefix, a fresh /proc of the namespace, /dev/null and /dev/urandom, and two
small tmpfs folders: /tmp and the empty working folder /sandbox), chroots into it and runs
the program there, waiting for it. As root the program runs under a uid of its own (no
groups, no capabilities, no_new_privs), so the process limit binds; as another user it runs
as that user with no capabilities. So the program:

- cannot see or signal the trainer (its pid namespace holds only itself and the init, which
  it may not signal or inspect; the trainer's pid and environment are not in its /proc),
  and gets a minimal environment;
- cannot read or write any file of the machine outside the read-only system folders (no
  /etc, no home folders, no working tree), and anything it writes lives in tmpfs;
- has no network (an empty network namespace: no interface is up, not even loopback);
- cannot create processes (RLIMIT_NPROC 0; an audit hook also refuses the Python-level
  calls), and nothing it starts outlives the call: when the init ends (after the program,
  or killed with its process group on the wall-clock timeout; `unshare --kill-child` and
  `timeout` see to it even if the trainer dies) the kernel kills the whole namespace.

Tests are judged in the parent, never with the program's objects. An assert test is parsed
here: each assert becomes a call that evaluates only its non-literal operands in the
child (`add(1, 2)` of `assert add(1, 2) == 3`) and records them as plain data (exact
builtin types only; anything else counts as a failure); the comparisons, `not`, `and`/`or`
and literal expected values stay in the parent, which compares plain data after the run.
So an `__eq__` that always returns True, or reading the expected value through
`sys._getframe`, earns nothing. The results carry a per-run secret and are read only after
a clean exit, so an early `sys.exit(0)` / `os._exit(0)` does not pass. Stdin/stdout tests
compare the program's output with the expected output in the parent.

Out of scope: the program shares its process with the harness, so it can rewrite the
harness in memory; what it gains is limited to tests whose expected value is computed in
the child (non-literal operands, setup lines, asserts inside loops or functions of the
test). The program can read the system's read-only folders and the base interpreter
(only the standard library is importable, not the trainer's virtual environment). Kernel
exploits are out of scope: run untrusted training data in a container or VM as well.

Where the namespaces cannot be had, the reward refuses to run (`check_available` raises a
ConfigError naming what failed) unless its params say `sandbox: unsafe_local`: then
programs run as before this sandbox, with rlimits, an audit hook and `unshare -n` where
that works, in a temp folder of the machine, which a hostile program can escape.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import operator
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1forge.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_MEMORY_MB = 512
DEFAULT_MAX_OUTPUT_BYTES = 65536
POOL_WORKERS = 2
# Programs running at once in this process, whoever asks (each takes a core while it runs).
_RUNNING = threading.BoundedSemaphore(POOL_WORKERS)
ISOLATED = "isolated"
UNSAFE_LOCAL = "unsafe_local"
# RLIMIT_NPROC of the program: no new processes or threads (binds for non-root uids).
PROCESS_LIMIT = 0
# The serialised operands of an assert test's results, and the value sizes they may have.
MAX_RESULT_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_ITEMS = 200_000
# Wall-clock slack over the CPU limit: interpreter start-up, sleeping code, a busy machine.
_WALL_FACTOR = 2.0
_WALL_SLACK = 1.0
_NO_NETWORK_WRAPPERS = (("unshare", "-n"), ("unshare", "-rn"))
# The program's own uid (root mode): one per run, from a range no account uses.
_UID_BASE = 200_000
_UID_SPAN = 1 << 16
_TMPFS_SIZE = "16m"
_WORKDIR = "/sandbox"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_TOOLS = ("timeout", "unshare", "sh", "mount", "chroot", "setpriv")
_TOOL_PATH = os.pathsep.join(("/usr/bin", "/bin", "/usr/sbin", "/sbin"))
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "TMPDIR": "/tmp",
}
_RECORD = "__r1forge_record__"

# Runs in the child as `python -I -c _HARNESS <payload fd> <results fd>`. The payload (the
# program, the rewritten tests, the secret, the limits) comes through a file descriptor that
# is closed before the program runs, so nothing of it is on a path the program can open.
_HARNESS = """\
import json, os, resource, sys

_BLOCKED = frozenset((
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
    "socket.sendto", "socket.sendmsg", "os.system", "os.fork", "os.forkpty",
    "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
))
_records = []
_budget = [0]
_max_depth = [0]


def _audit(event, args):
    if event in _BLOCKED:
        raise PermissionError("sandbox: " + event + " is not allowed")


def _encode(value, depth):
    _budget[0] -= 1
    if _budget[0] < 0 or depth > _max_depth[0]:
        raise ValueError("value too large")
    kind = type(value)
    if value is None:
        return ["none"]
    if kind is bool:
        return ["bool", value]
    if kind is int:
        return ["int", hex(value)]
    if kind is float:
        return ["float", value.hex()]
    if kind is complex:
        return ["complex", value.real.hex(), value.imag.hex()]
    if kind is str:
        return ["str", value]
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return [kind.__name__, [_encode(item, depth + 1) for item in value]]
    if kind is dict:
        return ["dict", [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]]
    raise TypeError("not plain data")


def _record(check, thunks):
    values = []
    for thunk in thunks:
        try:
            values.append(_encode(thunk(), 0))
        except Exception:
            values.append(None)
    _records.append([check, values])


def _main():
    with open(int(sys.argv[1]), "rb") as f:
        payload = json.loads(f.read())
    for name, value in payload["limits"]:
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            pass
    _budget[0], _max_depth[0] = payload["max_items"], payload["max_depth"]
    os.chdir(payload["cwd"])
    sys.addaudithook(_audit)
    token = payload["token"]
    solution = compile(payload["solution"], "solution.py", "exec")
    tests = compile(payload["tests"], "tests.py", "exec") if token else None
    del payload
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(solution, scope)
    if tests is None:
        return
    scope["__r1forge_record__"] = _record
    exec(tests, scope)
    with open(int(sys.argv[2]), "w", encoding="utf-8") as f:
        f.write(token + " " + json.dumps(_records) + "\\n")


_main()
"""


@dataclass(frozen=True)
class Limits:
    """Per-run resource limits and the sandbox policy, from the reward's params."""

    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    sandbox: str = ISOLATED

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Limits:
        sandbox = params.get("sandbox", ISOLATED)
        if sandbox not in (ISOLATED, UNSAFE_LOCAL):
            raise ConfigError(
                f"code reward: sandbox: {sandbox!r} is not one of {ISOLATED!r}, {UNSAFE_LOCAL!r}"
            )
        return cls(
            timeout=float(params.get("timeout", DEFAULT_TIMEOUT)),
            memory_mb=int(params.get("memory_mb", DEFAULT_MEMORY_MB)),
            max_output_bytes=int(params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)),
            sandbox=sandbox,
        )


def check_available(params: dict[str, Any]) -> str:
    """The mode the code reward will run programs in with these params: `root` or `userns`
    (namespaces), or `unsafe_local` when the params ask for it.

    Call at stage start: a run that cannot contain programs fails there with a ConfigError
    naming what is missing, not midway through training.
    """
    return _mode(Limits.from_params(params))


@functools.cache
def network_wrapper() -> tuple[str, ...]:
    """The first `unshare` prefix that works here (a new, empty network namespace), or ().

    Used only by `unsafe_local`; the namespace modes have a network namespace of their own.
    """
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

    Raises ConfigError if the sandbox is unavailable; any failure of the program is False.
    """
    mode = _mode(limits)
    try:
        with _RUNNING:  # callers may run side by side (accuracy's threads): the cap is global
            if isinstance(test, str):
                return _passes_asserts(mode, code, test, limits)
            stdout = run_program(code, str(test.get("input", "")), limits, mode)
        return stdout is not None and _normalise(stdout) == _normalise(str(test["output"]))
    except Exception:
        logger.debug("sandbox run failed", exc_info=True)
        return False


def run_program(code: str, stdin: str, limits: Limits, mode: str | None = None) -> str | None:
    """Stdout of running `code` on `stdin` in the sandbox, or None on failure (a non-zero
    exit, a timeout, more than `max_output_bytes` of output)."""
    outcome = _run(mode or _mode(limits), code, "", "", stdin, limits)
    return None if outcome is None else outcome.stdout


def pass_fractions(
    codes: list[str | None], tests: list[list[str | dict[str, Any]]], limits: Limits
) -> list[float]:
    """Fraction of its tests each code passes (0 without code or tests), two runs at a time.

    Raises ConfigError if programs cannot be contained here (see `check_available`).
    """
    jobs = [
        (i, code, test)
        for i, (code, its_tests) in enumerate(zip(codes, tests, strict=True))
        if code is not None
        for test in its_tests
    ]
    _mode(limits)  # an unavailable sandbox raises here, on the first call, before any run
    passed = [0] * len(codes)
    with ThreadPoolExecutor(max_workers=POOL_WORKERS) as pool:
        results = pool.map(lambda job: run_test(job[1], job[2], limits), jobs)
        for (i, _, _), ok in zip(jobs, results, strict=True):
            passed[i] += ok
    return [p / len(t) if t else 0.0 for p, t in zip(passed, tests, strict=True)]


def _normalise(output: str) -> str:
    """Stripped output with trailing spaces and Windows newlines ignored on every line."""
    return "\n".join(line.rstrip() for line in output.strip().splitlines())


# -- Modes: probing what this machine allows ----------------------------------------------


def _mode(limits: Limits) -> str:
    if limits.sandbox == UNSAFE_LOCAL:
        _warn_unsafe()
        return UNSAFE_LOCAL
    mode, problem = _probe()
    if mode is None:
        raise ConfigError(
            f"code reward: cannot contain programs on this machine ({problem}). The sandbox "
            "needs util-linux `unshare` and `setpriv`, `mount`, `chroot` and `timeout`, and "
            "Linux namespaces: pid, mount and network as root, plus a user namespace for "
            "other users. Set `sandbox: unsafe_local` in the code reward's params "
            "(reward_params.code) to run programs without them, which a hostile program escapes."
        )
    return mode


@functools.cache
def _warn_unsafe() -> None:
    logger.warning(
        "code reward: sandbox: unsafe_local: programs run in a temp folder of this machine "
        "and can read its files and environment, and signal its processes"
    )


@functools.cache
def _probe() -> tuple[str | None, str]:
    """(the namespace mode that works here, or None; what failed): run `print('ok')` once."""
    missing = [tool for tool in _TOOLS if shutil.which(tool, path=_TOOL_PATH) is None]
    if missing:
        return None, f"missing {', '.join(missing)}"
    mode = "root" if os.geteuid() == 0 else "userns"
    with tempfile.TemporaryFile() as errors:
        outcome = _run(mode, "print('ok')", "", "", "", Limits(timeout=10), stderr=errors)
        if outcome is not None and outcome.stdout == "ok\n":
            return mode, ""
        errors.seek(0)
        said = errors.read()[-2000:].decode("utf-8", "replace").strip()
    return None, f"a test program in {mode} mode failed: {said or 'no output'}"


@functools.cache
def _layout() -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], str]:
    """(symlinks to recreate, folders to bind read-only, the interpreter) of the minimal root."""
    links, binds = [], []
    for top in _SYSTEM_DIRS:
        if os.path.islink(top):
            links.append((top.lstrip("/"), os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    bound = [os.path.realpath(b) for b in binds]
    for needed in (os.path.realpath(sys.base_prefix), os.path.dirname(interpreter)):
        if not any(needed == b or needed.startswith(b + "/") for b in bound):
            binds.append(needed)
            bound.append(needed)
    return tuple(links), tuple(binds), interpreter


def _setup_script(root: Path, uid: int, gid: int) -> str:
    """Shell commands, run as the namespaces' init, that build the minimal root and run the
    program (the script's arguments) chrooted in it, waiting for it so that the program
    never becomes the init and the whole namespace dies when the script ends."""
    links, binds, _ = _layout()
    tool = {name: shlex.quote(shutil.which(name, path=_TOOL_PATH) or name) for name in _TOOLS}
    mount, q = tool["mount"], shlex.quote
    lines = [
        "set -e",
        f"{mount} -t tmpfs -o size=1m,mode=755,nosuid,nodev r1forge {q(str(root))}",
        f"cd {q(str(root))}",
        f"mkdir -p dev proc tmp .{_WORKDIR}",
        *(f"ln -s {q(target)} {q(name)}" for name, target in links),
    ]
    for path in binds:
        lines.append(f"mkdir -p {q('.' + path)}")
        lines.append(f"{mount} --bind -o ro,nosuid,nodev {q(path)} {q('.' + path)}")
    for device in ("null", "urandom"):
        lines.append(f": > dev/{device}")
        lines.append(f"{mount} --bind /dev/{device} dev/{device}")
    tmpfs = f"size={_TMPFS_SIZE},nosuid,nodev"
    lines += [
        f"{mount} -t proc -o nosuid,nodev,noexec proc proc",
        f"{mount} -t tmpfs -o {tmpfs},mode=1777 r1forge-tmp tmp",
        f"{mount} -t tmpfs -o {tmpfs},mode=700,uid={uid},gid={gid} r1forge-work .{_WORKDIR}",
        f"{mount} -o remount,ro,bind {q(str(root))}",
        "cd /",
        f'{tool["chroot"]} {q(str(root))} "$@"',
    ]
    return "\n".join(lines)


def _command(mode: str, root: Path, fds: tuple[int, int], wall: float) -> list[str]:
    """The command line that runs the harness in `mode`."""
    fd_args = [str(fd) for fd in fds]
    if mode == UNSAFE_LOCAL:
        return [*network_wrapper(), sys.executable, "-I", "-c", _HARNESS, *fd_args]
    tool = {name: shutil.which(name, path=_TOOL_PATH) or name for name in _TOOLS}
    namespaces = ["--pid", "--fork", "--kill-child", "--mount", "--net", "--ipc", "--uts"]
    drop = ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    if mode == "root":
        uid = gid = _UID_BASE + secrets.randbelow(_UID_SPAN)
        drop = [f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *drop]
    else:  # userns: root of a user namespace mapped to this user, without capabilities
        uid = gid = 0
        namespaces = ["--user", "--map-root-user", *namespaces]
    return [
        tool["timeout"], "-s", "KILL", f"{wall + _WALL_SLACK:.1f}",  # the trainer may die
        tool["unshare"], *namespaces,
        tool["sh"], "-c", _setup_script(root, uid, gid), "r1forge-sandbox",
        tool["setpriv"], *drop, "--",
        _layout()[2], "-I", "-c", _HARNESS, *fd_args,
    ]  # fmt: skip


# -- Running --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    stdout: str
    results: bytes


def _run(
    mode: str,
    code: str,
    tests: str,
    token: str,
    stdin: str,
    limits: Limits,
    stderr: Any = subprocess.DEVNULL,
) -> _Outcome | None:
    """Stdout and results of one run of `code` (then `tests` when a token is given), or None
    on a non-zero exit, a timeout or too much output."""
    cpu = max(1, round(limits.timeout))
    wall = cpu * _WALL_FACTOR + _WALL_SLACK
    payload = {
        "solution": code,
        "tests": tests,
        "token": token,
        "cwd": "." if mode == UNSAFE_LOCAL else _WORKDIR,
        "limits": [
            ("RLIMIT_CPU", cpu),
            ("RLIMIT_AS", limits.memory_mb << 20),
            ("RLIMIT_FSIZE", max(limits.max_output_bytes, MAX_RESULT_BYTES) + 1),
            ("RLIMIT_CORE", 0),
            ("RLIMIT_NPROC", PROCESS_LIMIT),
        ],
        "max_items": MAX_ITEMS,
        "max_depth": MAX_DEPTH,
    }
    with tempfile.TemporaryDirectory(prefix="r1forge-sandbox-", ignore_cleanup_errors=True) as d:
        folder = Path(d)
        (folder / "root").mkdir()
        (folder / "work").mkdir()
        (folder / "payload.json").write_text(json.dumps(payload), encoding="ascii")
        (folder / "stdin.txt").write_text(stdin, encoding="utf-8", errors="surrogatepass")
        with (
            open(folder / "payload.json", "rb") as payload_file,
            open(folder / "results", "wb") as results_file,
            open(folder / "stdin.txt", "rb") as fin,
            open(folder / "stdout.txt", "wb") as fout,
        ):
            fds = (payload_file.fileno(), results_file.fileno())
            # Output goes to files, so RLIMIT_FSIZE caps it and no reader thread is needed.
            proc = subprocess.Popen(
                _command(mode, folder / "root", fds, wall),
                cwd=folder / "work",
                env=_ENV,
                stdin=fin,
                stdout=fout,
                stderr=stderr,
                pass_fds=fds,
                start_new_session=True,
            )
            try:
                status = proc.wait(timeout=wall)
            except subprocess.TimeoutExpired:
                # Not reaped yet, so the group id cannot have been reused: safe to kill. In a
                # namespace mode, the init's parent dies with it, and the kernel kills the rest.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return None
        if status != 0:
            return None
        with open(folder / "stdout.txt", "rb") as fout:
            out = fout.read(limits.max_output_bytes + 1)
        if len(out) > limits.max_output_bytes:
            return None
        with open(folder / "results", "rb") as fres:
            results = fres.read(MAX_RESULT_BYTES + 1)
        return _Outcome(out.decode("utf-8", errors="replace"), results)


# -- Assert tests: rewritten here, judged here ------------------------------------------------

# A judging plan: ("lit", value) | ("leaf", index) | ("not", plan) | ("and"|"or", plans)
# | ("cmp", operand plans, operator names).
_Plan = tuple[Any, ...]


@dataclass(frozen=True)
class _AssertTest:
    source: str  # the test with each assert replaced by a call recording its leaves
    plans: tuple[tuple[_Plan, int], ...]  # per assert: its plan and its number of leaves
    required: frozenset[int]  # top-level asserts, each of which must be recorded


class _Rewriter(ast.NodeTransformer):
    """Replace every `assert` with `__r1forge_record__(k, (lambda: leaf, ...))`, keeping its
    logic and literal operands here."""

    def __init__(self, top_level: set[int]) -> None:
        self.top_level = top_level  # ids of the asserts in the test's body
        self.plans: list[tuple[_Plan, int]] = []
        self.required: set[int] = set()

    def visit_Assert(self, node: ast.Assert) -> ast.stmt:
        leaves: list[ast.expr] = []
        check = len(self.plans)
        self.plans.append((_plan(node.test, leaves), len(leaves)))
        if id(node) in self.top_level:
            self.required.add(check)
        no_args = ast.arguments(
            posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], defaults=[]
        )
        thunks = ast.Tuple([ast.Lambda(no_args, leaf) for leaf in leaves], ast.Load())
        call = ast.Call(ast.Name(_RECORD, ast.Load()), [ast.Constant(check), thunks], [])
        return ast.copy_location(ast.Expr(call), node)


def _plan(node: ast.expr, leaves: list[ast.expr]) -> _Plan:
    """How the parent judges `node`; sub-expressions it cannot judge become leaves."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ("not", _plan(node.operand, leaves))
    if isinstance(node, ast.BoolOp):
        kind = "and" if isinstance(node.op, ast.And) else "or"
        return (kind, tuple(_plan(value, leaves) for value in node.values))
    if isinstance(node, ast.Compare):
        operands = tuple(_plan(o, leaves) for o in (node.left, *node.comparators))
        return ("cmp", operands, tuple(type(op).__name__ for op in node.ops))
    try:
        return ("lit", ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        leaves.append(node)
        return ("leaf", len(leaves) - 1)


def _prepare(test: str) -> _AssertTest:
    tree = ast.parse(test)
    rewriter = _Rewriter({id(stmt) for stmt in tree.body if isinstance(stmt, ast.Assert)})
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    return _AssertTest(ast.unparse(tree), tuple(rewriter.plans), frozenset(rewriter.required))


def _passes_asserts(mode: str, code: str, test: str, limits: Limits) -> bool:
    try:
        prepared = _prepare(test)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    token = secrets.token_hex(16)
    outcome = _run(mode, code, prepared.source, token, "", limits)
    if outcome is None:
        return False
    head, _, body = outcome.results.partition(b" ")
    if not secrets.compare_digest(head, token.encode()) or not body.endswith(b"\n"):
        return False
    records = json.loads(body)
    if type(records) is not list:
        return False
    seen = set()
    for record in records:
        check, encoded = record
        if type(check) is not int or not 0 <= check < len(prepared.plans):
            return False
        plan, n_leaves = prepared.plans[check]
        if type(encoded) is not list or len(encoded) != n_leaves:
            return False
        values = [_FAILED if item is None else _decode(item, 0) for item in encoded]
        if not _judge(plan, values):
            return False
        seen.add(check)
    return prepared.required <= seen


class _Failed:
    """A leaf that raised or was not plain data: judging it fails the assert."""


_FAILED = _Failed()


def _decode(item: Any, depth: int) -> Any:
    """Plain data from the child's tagged form; anything malformed raises."""
    if depth > MAX_DEPTH or type(item) is not list or not item:
        raise ValueError("malformed result")
    tag, args = item[0], item[1:]
    if tag == "none" and not args:
        return None
    if tag == "bool" and len(args) == 1 and type(args[0]) is bool:
        return args[0]
    if tag in _DECODERS and len(args) == 1 and type(args[0]) is str:
        return _DECODERS[tag](args[0])
    if tag == "complex" and len(args) == 2 and all(type(a) is str for a in args):
        return complex(float.fromhex(args[0]), float.fromhex(args[1]))
    if tag in _CONTAINERS and len(args) == 1 and type(args[0]) is list:
        return _CONTAINERS[tag](_decode(x, depth + 1) for x in args[0])
    if tag == "dict" and len(args) == 1 and type(args[0]) is list:
        pairs = [(_decode(k, depth + 1), _decode(v, depth + 1)) for k, v in args[0]]
        return dict(pairs)
    raise ValueError("malformed result")


_DECODERS: dict[str, Callable[[str], Any]] = {
    "int": lambda s: int(s, 16),
    "float": float.fromhex,
    "str": str,
    "bytes": bytes.fromhex,
}
_CONTAINERS: dict[str, Callable[[Any], Any]] = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}


class _CannotJudge(Exception):
    """A failed leaf was needed, or an operator has no meaning on plain data."""


def _identical(a: Any, b: Any) -> bool:
    """`is` on plain data: meaningful only for the singletons None, True and False."""
    if any(x is None or type(x) is bool for x in (a, b)):
        return a is b
    raise _CannotJudge("`is` between values other than None, True and False")


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": _identical,
    "IsNot": lambda a, b: not _identical(a, b),
}


def _judge(plan: _Plan, values: list[Any]) -> bool:
    """Whether an assert holds, evaluated like Python (short-circuits included) on plain data."""
    try:
        return bool(_value(plan, values))
    except Exception:
        return False


def _value(plan: _Plan, values: list[Any]) -> Any:
    kind = plan[0]
    if kind == "lit":
        return plan[1]
    if kind == "leaf":
        value = values[plan[1]]
        if value is _FAILED:
            raise _CannotJudge("the operand raised or is not plain data")
        return value
    if kind == "not":
        return not _value(plan[1], values)
    if kind in ("and", "or"):
        result: Any = None
        for part in plan[1]:
            result = _value(part, values)
            if bool(result) != (kind == "and"):
                return result
        return result
    operands, ops = plan[1], plan[2]
    left = _value(operands[0], values)
    for op, operand in zip(ops, operands[1:], strict=True):
        right = _value(operand, values)
        if not _OPS[op](left, right):
            return False
        left = right
    return True
