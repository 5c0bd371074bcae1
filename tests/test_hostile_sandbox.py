"""Hostile programs given as completions to the real `code` reward: none may harm or read the
trainer (this test process), read or write a file outside its sandbox, reach the network,
leave a process or temp folder behind, or score by gaming the judge (issue 18)."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import r1forge
from r1forge.errors import ConfigError
from r1forge.rewards import sandbox, score_batch

pytestmark = pytest.mark.timeout(120)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS: list[Any] = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
SECRET = "planted-" + secrets.token_hex(8)


def answer(code: str) -> str:
    return f"<think>I will write the function.</think>\n```python\n{code}```"


def reward(code: str, tests: list[Any], **params: Any) -> float:
    example = {"id": "c", "prompt": "write it", "task": "code", "tests": tests}
    return score_batch("code", [answer(code)], [example], **params)[0]


def output(code: str, **params: Any) -> str:
    """What the program prints in the sandbox ('' if its run failed)."""
    return sandbox.run_program(code, "", sandbox.Limits.from_params(params)) or ""


def processes_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(autouse=True)
def contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Namespaces must be available; the sandbox's temp folders go to a private folder that
    must be empty again after each test; the trainer's environment holds planted secrets."""
    try:
        mode = sandbox.check_available({})
    except ConfigError as e:
        pytest.skip(f"this machine cannot run the namespace sandbox: {e}")
    assert mode in ("root", "userns")
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    yield tmp_path
    assert not list(temp.iterdir()), "a r1forge-sandbox-* folder was left behind"


def test_honest_solutions_still_score() -> None:
    assert reward(ADD, ADD_TESTS) == 1.0
    assert reward("print(2 * int(input()))\n", [{"input": "21\n", "output": "42"}]) == 1.0
    richer = textwrap.dedent("""\
        def f(x):
            return {"list": [x, 2], "tuple": (x,), "set": {x}, "none": None, "float": x / 4,
                    "big": 7 ** 2000, "bytes": b"\\x00" * x, "text": "é\\u4e2d" * x, "z": 1j}
        def g(n):
            return None if n < 0 else list(range(n))
        """)
    tests = [
        "assert f(1)['list'] == [1, 2] and f(1)['tuple'] == (1,)",
        "assert f(1)['set'] == {1} and f(1)['none'] is None and f(2)['float'] == 0.5",
        "assert f(1)['big'] == 7 ** 2000 and f(3)['bytes'] == bytes(3) and f(1)['z'] == 1j",
        "assert f(2)['text'] == 'é中é中' and 'text' in f(1) and 'nope' not in f(1)",
        "x = g(-1)\nassert x is None or x[5] == 5",  # x[5] raises, but is not needed
        "for n in range(4):\n    assert len(g(n)) == n\nassert 0 <= len(g(3)) < 4",
        "assert not g(0) and g(2) != [0, 2] and g(2) == [0, 1]",
    ]
    assert reward(richer, tests) == 1.0
    # Judged like Python on plain data: a list is not a tuple, `not` and failures count.
    assert reward("def f():\n    return [1, 2]\n", ["assert f() == (1, 2)"]) == 0.0
    assert reward("def f():\n    return 0\n", ["assert not f()", "assert f()"]) == 0.5
    assert reward("def f():\n    raise ValueError\n", ["assert f() == 1 or True"]) == 0.0


def test_killing_the_parent_fails_the_program_and_spares_the_trainer() -> None:
    me = os.getpid()
    for attack in ("os.kill(os.getppid(), 9)", "os.kill(-1, 9)", "os.kill(0, 9)"):
        assert reward(f"import os\n{attack}\n" + ADD, ADD_TESTS) == 0.0
    assert os.getpid() == me  # still here, and `contained` checks the temp folders
    seen = output(
        "import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError as e:\n"
        "    print(type(e).__name__)\nprint('parent', os.getppid())\n"
    )
    # Its parent is the namespace's init (pid 1), not the trainer, and cannot be killed.
    assert "parent 1" in seen


def test_no_secret_of_the_trainer_can_be_read() -> None:
    trainer = os.getpid()
    probe = textwrap.dedent(f"""\
        import os
        paths = ["/proc/self/environ", "/proc/1/environ", "/proc/%d/environ" % os.getppid(),
                 "/proc/{trainer}/environ", "/proc/{trainer}/cmdline"]
        paths += ["/proc/%s/environ" % p for p in os.listdir("/proc") if p.isdigit()]
        for path in paths:
            try:
                print(path, open(path, "rb").read().replace(b"\\0", b" ").decode())
            except OSError as e:
                print(path, type(e).__name__)
        print(dict(os.environ))
        """)
    seen = output(probe)
    assert SECRET not in seen
    assert "LC_ALL=C.UTF-8" in seen  # its own, minimal environment was readable
    assert f"/proc/{trainer}/environ FileNotFoundError" in seen
    leak = "import os\nprint(open('/proc/%d/environ' % os.getppid()).read())\n"
    assert reward(leak, [{"input": "", "output": SECRET}]) == 0.0
    assert reward("import os\nprint(os.environ.get('WANDB_API_KEY'))\n", [{"output": SECRET}]) == 0


def test_no_file_outside_the_sandbox_can_be_read(contained: Path) -> None:
    planted = contained / "secret.txt"
    planted.write_text(SECRET)
    passwd = Path("/etc/passwd").read_text()
    read_passwd = "print(open('/etc/passwd').read(), end='')\n"
    assert reward(read_passwd, [{"input": "", "output": passwd}]) == 0.0
    assert reward(f"print(open({str(planted)!r}).read())\n", [{"output": SECRET}]) == 0.0
    for path in ("/etc/passwd", str(planted), "/root/.bashrc", str(Path.cwd() / "README.md")):
        probe = f"try:\n    open({path!r})\nexcept OSError as e:\n    print(type(e).__name__)\n"
        assert output(probe) == "FileNotFoundError\n", path


def test_no_file_outside_the_sandbox_can_be_written(contained: Path) -> None:
    tag = secrets.token_hex(4)
    targets = [
        contained / f"escaped-{tag}.txt",
        Path(tempfile.gettempdir()) / f"escaped-{tag}.txt",
        Path("/tmp") / f"r1forge-escape-{tag}.txt",
        Path("/usr") / f"r1forge-escape-{tag}.txt",
        Path.cwd() / f"escaped-{tag}.txt",
    ]
    writer = textwrap.dedent(f"""\
        for path in {[str(t) for t in targets]!r} + ["local-{tag}.txt"]:
            try:
                open(path, "w").write("escaped")
                print("wrote", path)
            except OSError as e:
                print("refused", path, type(e).__name__)
        """)
    seen = output(writer)
    assert f"wrote local-{tag}.txt" in seen  # its own working folder is writable (tmpfs)
    for target in targets:
        assert not target.exists(), target
    assert not list(Path("/tmp").glob(f"*{tag}*"))
    assert not list(Path.cwd().glob(f"*{tag}*"))


def test_the_parent_working_tree_cannot_be_listed() -> None:
    cwd = Path.cwd()
    listing = repr(sorted(os.listdir(cwd)))
    lister = f"import os\nprint(sorted(os.listdir({str(cwd)!r})))\n"
    assert reward(lister, [{"input": "", "output": listing}]) == 0.0
    probe = textwrap.dedent(f"""\
        import os
        for path in [{str(cwd)!r}, "/work", "/home", "/etc"]:
            try:
                print(path, os.listdir(path))
            except OSError as e:
                print(path, type(e).__name__)
        print("root", sorted(os.listdir("/")), "cwd", os.getcwd(), os.listdir("."))
        """)
    seen = output(probe)
    for path in (str(cwd), "/work", "/home", "/etc"):
        assert f"{path} FileNotFoundError" in seen
    assert "cwd /sandbox []" in seen  # an empty working folder of its own


FORK_BOMB = textwrap.dedent("""\
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    made = 0
    for _ in range(200):
        pid = libc.fork()
        if pid == 0:
            libc.prctl(15, b"r1f-bomb", 0, 0, 0)
            libc.pause()
        made += pid > 0
    print("forked", made, "errno", ctypes.get_errno())
    """)


def test_ctypes_fork_bomb_creates_nothing() -> None:
    seen = output(FORK_BOMB)
    assert seen == "forked 0 errno 11\n"  # EAGAIN: RLIMIT_NPROC binds (not root)
    assert reward(FORK_BOMB + ADD, ADD_TESTS) == 1.0  # the attempt only costs itself
    assert processes_named("r1f-bomb") == []


def fork_exec(marker: str) -> str:
    return textwrap.dedent(f"""\
        import _posixsubprocess, os
        r, w = os.pipe()
        try:
            pid = _posixsubprocess.fork_exec(
                [b"/bin/echo", b"{marker}"], [b"/bin/echo"], True, (), None, None,
                -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, True)
            os.waitpid(pid, 0)
        except OSError as e:
            print(type(e).__name__)
        """)


def test_posixsubprocess_fork_exec_cannot_run_a_program() -> None:
    marker = "echoed-" + secrets.token_hex(4)
    assert output(fork_exec(marker)) == "BlockingIOError\n"
    assert reward(fork_exec(marker), [{"input": "", "output": marker}]) == 0.0
    if os.geteuid() == 0:  # the attack is real: without the sandbox, as root, it runs echo
        assert marker in output(fork_exec(marker), sandbox="unsafe_local")


def setsid_grandchild(name: str, marker: Path, then: str) -> str:
    return textwrap.dedent(f"""\
        import ctypes, os, time
        libc = ctypes.CDLL(None, use_errno=True)
        pid = libc.fork()
        if pid == 0:
            libc.setsid()
            if libc.fork() == 0:
                libc.prctl(15, b"{name}", 0, 0, 0)
                time.sleep(2)
                for path in ({str(marker)!r}, "marker"):
                    try:
                        open(path, "w").write("outlived")
                    except OSError:
                        pass
            os._exit(0)
        print("forked", pid > 0, flush=True)
        {then}
        """)


def test_a_setsid_grandchild_does_not_outlive_the_call(
    contained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "r1f" + secrets.token_hex(4)
    marker = contained / "marker"
    # With the default process limit the fork itself fails.
    assert output(setsid_grandchild(name, marker, "")) == "forked False\n"
    # Allow processes, so that only the pid namespace can stop the grandchild: after a clean
    # exit, and after a wall-clock kill of a program that sleeps.
    monkeypatch.setattr(sandbox, "PROCESS_LIMIT", 8)
    assert output(setsid_grandchild(name, marker, "")) == "forked True\n"
    assert processes_named(name) == []
    start = time.monotonic()
    sleeper = setsid_grandchild(name, marker, "time.sleep(60)")
    assert reward(sleeper, [{"input": "", "output": "forked True"}], timeout=1) == 0.0
    assert time.monotonic() - start < 10
    assert processes_named(name) == []
    time.sleep(3)
    assert processes_named(name) == []
    assert not marker.exists()


def test_no_network(contained: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.5)
        port = server.getsockname()[1]
        raw = textwrap.dedent(f"""\
            import ctypes, socket, struct
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
            address = struct.pack("<HH4s8x", socket.AF_INET, socket.htons({port}),
                                  socket.inet_aton("127.0.0.1"))
            print("connect", libc.connect(fd, address, len(address)), ctypes.get_errno())
            """)
        seen = output(raw)  # bypasses the audit hook: only the namespace stops it
        assert seen.startswith("connect -1 ")
        with pytest.raises(TimeoutError):
            server.accept()
    remote = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\nprint('up')\n"
    assert reward(remote, [{"input": "", "output": "up"}]) == 0.0


def test_an_always_equal_object_scores_nothing() -> None:
    always = textwrap.dedent("""\
        class Anything:
            def __eq__(self, other):
                return True
            def __ne__(self, other):
                return False
            def __bool__(self):
                return True
        def add(a, b):
            return Anything()
        """)
    assert reward(always, ADD_TESTS) == 0.0
    assert reward(always, ["assert add(1, 2)", "assert 3 == add(1, 2)"]) == 0.0
    int_like = "class Int(int):\n    def __eq__(self, other):\n        return True\n"
    assert reward(int_like + "def add(a, b):\n    return Int(0)\n", ADD_TESTS) == 0.0
    list_like = "class L(list):\n    pass\ndef add(a, b):\n    return L([a + b])\n"
    assert reward(list_like, ["assert add(1, 2) == [3]"]) == 0.0


def test_the_expected_value_cannot_be_read() -> None:
    frames = textwrap.dedent("""\
        import gc, sys
        def add(a, b):
            found = []
            frame = sys._getframe(1)
            while frame is not None:
                found += [c for c in frame.f_code.co_consts if type(c) is int]
                found += [v for v in frame.f_locals.values() if type(v) is int]
                frame = frame.f_back
            for obj in gc.get_objects():
                if type(obj) in (list, tuple, dict):
                    items = obj.values() if type(obj) is dict else obj
                    found += [v for v in items if type(v) is int and v > 1000]
            return max(found, default=0)
        """)
    tests = ["assert add(1000, 2345) == 3345", "assert add(-1000, 10001) == 9001"]
    assert reward(frames, tests) == 0.0
    assert reward(ADD, tests) == 1.0


def test_forged_results_do_not_pass() -> None:
    forger = textwrap.dedent("""\
        import os, sys
        frame = sys._getframe()
        while "token" not in frame.f_locals:
            frame = frame.f_back
        line = frame.f_locals["token"] + ' [[0, [["int", "0x0"]]], [1, [["bool", true]]]]\\n'
        os.write(int(sys.argv[2]), line.encode())
        os._exit(0)
        """)
    # The forger holds the secret and the results channel, but not the literal expected values.
    assert reward(forger, ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == 0.0
    assert reward("print('x')\n", ["assert add(1, 2) == 3"]) == 0.0


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_early_exit_scores_nothing(exit_call: str) -> None:
    assert reward(ADD + exit_call + "\n", ADD_TESTS) == 0.0
    assert reward(exit_call + "\n", ["assert True"]) == 0.0


NOBODY_RUN = """\
import json, os, sys
sys.path.insert(0, sys.argv[1])
from r1forge.rewards import sandbox, score_batch
def reward(code, tests):
    example = {"id": "c", "prompt": "p", "task": "code", "tests": tests}
    return score_batch("code", ["<think>x</think>\\n```python\\n" + code + "```"], [example])[0]
add = "def add(a, b):\\n    return a + b\\n"
always = "class A:\\n    def __eq__(s, o):\\n        return True\\ndef add(a, b):\\n    return A()\\n"
env = "import os\\nfor p in ('/proc/self/environ', '/proc/1/environ'):\\n" \\
    "    try:\\n        print(open(p).read())\\n    except OSError as e:\\n        print(e)\\n"
print(json.dumps({
    "uid": os.getuid(),
    "mode": sandbox.check_available({}),
    "honest": reward(add, ["assert add(1, 2) == 3"]),
    "always": reward(always, ["assert add(1, 2) == 3"]),
    "kill": reward("import os\\nos.kill(os.getppid(), 9)\\nos.kill(0, 9)\\n" + add,
                   ["assert add(1, 2) == 3"]),
    "passwd": sandbox.run_program("open('/etc/passwd')", "", sandbox.Limits()),
    "bomb": sandbox.run_program(sys.stdin.read(), "", sandbox.Limits()),
    "env": sandbox.run_program(env, "", sandbox.Limits()),
    "temp": os.listdir(os.environ["TMPDIR"]),
}))
"""


def test_user_namespace_mode_as_an_unprivileged_user() -> None:
    """The mode for trainers that do not run as root: here, as `nobody`, with the system
    interpreter (this session's interpreter lives where `nobody` may not read)."""
    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if os.geteuid() != 0:
        pytest.skip("not root: every other test of this file already runs in userns mode")
    if setpriv is None or not os.access(python, os.X_OK):
        pytest.skip(f"needs setpriv and {python} to run a trainer as nobody")
    temp = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        temp.chmod(0o777)
        proc = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", python, "-I",
             "-c", NOBODY_RUN, str(Path(r1forge.__file__).parents[1])],
            input=FORK_BOMB, capture_output=True, text=True, timeout=60, cwd=temp,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(temp), "WANDB_API_KEY": SECRET},
        )  # fmt: skip
        if "No module named" in proc.stderr:
            pytest.skip(f"{python} cannot import r1forge's dependencies: {proc.stderr[-300:]}")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
    finally:
        shutil.rmtree(temp)
    assert got["uid"] == 65534 and got["mode"] == "userns"
    assert (got["honest"], got["always"], got["kill"]) == (1.0, 0.0, 0.0)
    assert got["passwd"] is None  # FileNotFoundError: the run failed
    assert got["bomb"] == "forked 0 errno 11\n"
    assert SECRET not in got["env"] and "LC_ALL=C.UTF-8" in got["env"]
    assert got["temp"] == []


def test_root_without_namespaces_refuses_at_the_first_call() -> None:
    """Root without CAP_SYS_ADMIN (a default container) cannot build the sandbox: the reward
    says so instead of running programs as a capability-less root, unless told unsafe_local."""
    capsh = shutil.which("capsh")
    if os.geteuid() != 0 or capsh is None:
        pytest.skip("needs root and capsh to drop CAP_SYS_ADMIN")
    script = textwrap.dedent("""\
        from r1forge.errors import ConfigError
        from r1forge.rewards import score_batch
        example = {"id": "c", "prompt": "p", "task": "code", "tests": ["assert x == 1"]}
        try:
            score_batch("code", ["no code here"], [example])
        except ConfigError as e:
            print("refused:", e)
        done = "<think>x</think>\\n```python\\nx = 1\\n```"
        print("unsafe_local:", score_batch("code", [done], [example], sandbox="unsafe_local"))
        """)
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    proc = subprocess.run(
        [capsh, "--drop=cap_sys_admin", "--", "-c", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "refused: code reward: cannot contain programs on this machine" in proc.stdout
    assert "unshare failed: Operation not permitted" in proc.stdout
    assert "unsafe_local: [1.0]" in proc.stdout
