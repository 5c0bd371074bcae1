"""The code reward and its sandbox: pass fractions on assert and stdin/stdout tests, and
misbehaving programs (loops, memory hogs, network, floods, early exits) that must fail fast."""

from __future__ import annotations

import time
from typing import Any

import pytest

from r1forge.errors import ConfigError
from r1forge.rewards import sandbox, score, score_batch

pytestmark = pytest.mark.timeout(60)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS: list[Any] = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 4"]
DOUBLE_STDIO: list[Any] = [
    {"input": "21\n", "output": "42\n"},
    {"input": "0", "output": "0"},
    {"input": "-4\n", "output": "  -8  \n\n"},  # compared stripped
]


# Tests that do not run programs in the namespace sandbox.
WITHOUT_NAMESPACES = {
    "test_without_namespaces_the_reward_refuses_unless_unsafe_local",
    "test_network_wrapper_probe_is_cached",
}


@pytest.fixture(autouse=True)
def namespaces(request: pytest.FixtureRequest) -> None:
    """Skip, saying why, where this machine cannot run the sandbox (it then refuses to run)."""
    if request.function.__name__ in WITHOUT_NAMESPACES:
        return
    try:
        sandbox.check_available({})
    except ConfigError as e:
        pytest.skip(f"this machine cannot run the namespace sandbox: {e}")


def answer(code: str, think: str = "I will write the function.") -> str:
    return f"<think>{think}</think>\n```python\n{code}```"


def example(tests: list[Any], **extra: Any) -> dict[str, Any]:
    return {"id": "c", "prompt": "write it", "task": "code", "tests": tests, **extra}


def run_one(code: str, test: Any = "assert True", **params: Any) -> float:
    return score_batch("code", [answer(code)], [example([test])], **params)[0]


def test_assert_tests_pass_fail_and_partial() -> None:
    assert score("code", answer(ADD), example(ADD_TESTS)) == 1.0
    assert score("code", answer("def add(a, b):\n    return a - b\n"), example(ADD_TESTS)) == 0.0
    # Right for add(1, 2) and add(-1, 1), wrong for add(2, 2): 2 of 3.
    partial = "def add(a, b):\n    return 0 if a == 2 else a + b\n"
    assert score("code", answer(partial), example(ADD_TESTS)) == pytest.approx(2 / 3)


def test_stdin_stdout_tests() -> None:
    double = "print(2 * int(input()))\n"
    assert score("code", answer(double), example(DOUBLE_STDIO)) == 1.0
    assert score("code", answer("print(int(input()) + 21)\n"), example(DOUBLE_STDIO)) == 1 / 3
    mixed = example([{"input": "3", "output": "6"}, "assert 2 * 3 == 6"])
    assert (
        score("code", answer("import sys\nprint(2 * int(sys.stdin.read() or 3))\n"), mixed) == 1.0
    )


def test_which_code_block_counts() -> None:
    wrong_then_right = answer("def add(a, b):\n    return 0\n") + "\n```python\n" + ADD + "```"
    assert score("code", wrong_then_right, example(ADD_TESTS)) == 1.0
    in_think_only = f"<think>\n```python\n{ADD}```\n</think>\nDone."
    assert score("code", in_think_only, example(ADD_TESTS)) == 0.0
    assert score("code", "<think>hmm</think>no code at all", example(ADD_TESTS)) == 0.0
    assert score("code", answer(ADD), example([])) == 0.0  # no tests
    assert score("code", answer("def add(a, b) return a + b\n"), example(ADD_TESTS)) == 0.0


def test_score_batch_and_accuracy_code_verifier() -> None:
    completions = [answer(ADD), answer("def add(a, b):\n    return a - b\n"), "no code"]
    examples = [example(ADD_TESTS)] * 3
    assert score_batch("code", completions, examples) == [1.0, 0.0, 0.0]
    code_example = example(ADD_TESTS, verifier="code")
    assert score_batch("accuracy", completions, [code_example] * 3) == [1.0, 0.0, 0.0]


def test_early_exit_does_not_pass_asserts() -> None:
    assert run_one("import sys\nsys.exit(0)\n", "assert False") == 0.0
    assert run_one("import os\nos._exit(0)\n", "assert False") == 0.0
    assert run_one("raise SystemExit\n", "assert False") == 0.0
    overwrite_tests = "open('tests.py', 'w').write('')\n"  # would empty the asserts
    assert run_one(overwrite_tests, "assert False") == 0.0
    assert run_one("x = 1\n", "assert x == 1") == 1.0


def test_infinite_loop_is_stopped_by_the_cpu_limit() -> None:
    start = time.monotonic()
    assert run_one("while True:\n    pass\n", timeout=1) == 0.0
    assert time.monotonic() - start < 10


def test_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    start = time.monotonic()
    assert run_one("import time\ntime.sleep(60)\n", timeout=1) == 0.0
    assert time.monotonic() - start < 10


def test_memory_hog_fails_but_modest_memory_passes() -> None:
    assert run_one("x = bytearray(2 * 1024 ** 3)\n") == 0.0
    assert run_one("x = [0] * 10 ** 9\n") == 0.0
    assert run_one("x = bytearray(50 * 1024 ** 2)\n", "assert len(x) == 50 * 1024 ** 2") == 1.0
    assert run_one("x = bytearray(50 * 1024 ** 2)\n", memory_mb=40) == 0.0


NETWORK = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n"


def test_network_attempt_fails() -> None:
    assert run_one(NETWORK) == 0.0
    assert run_one("import socket\nsocket.getaddrinfo('example.com', 80)\n") == 0.0


@pytest.mark.parametrize("mode", ["isolated", "unsafe_local"])
def test_audit_hook_blocks_network_without_unshare(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setattr(sandbox, "network_wrapper", lambda: ())  # used by unsafe_local only
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.socket()\n"
        "    print('open')\n"
        "except PermissionError:\n"
        "    print('blocked')\n"
    )
    assert run_one(probe, {"input": "", "output": "blocked"}, sandbox=mode) == 1.0
    assert run_one(NETWORK, sandbox=mode) == 0.0


def test_without_namespaces_the_reward_refuses_unless_unsafe_local(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "_probe", lambda: (None, "missing setpriv"))
    with pytest.raises(ConfigError, match=r"missing setpriv.*sandbox: unsafe_local"):
        sandbox.check_available({})
    # The first call of the reward raises, even for a batch without any code to run.
    with pytest.raises(ConfigError, match="missing setpriv"):
        score_batch("code", ["no code"], [example(ADD_TESTS)])
    sandbox._warn_unsafe.cache_clear()
    with caplog.at_level("WARNING", logger=sandbox.__name__):
        assert sandbox.check_available({"sandbox": "unsafe_local"}) == "unsafe_local"
    assert "sandbox: unsafe_local" in caplog.text
    assert run_one("x = 1\n", "assert x == 1", sandbox="unsafe_local") == 1.0
    with pytest.raises(ConfigError, match="'nope' is not one of"):
        sandbox.check_available({"sandbox": "nope"})


def test_network_wrapper_probe_is_cached() -> None:
    """The unsafe_local mode's `unshare -n` probe runs once."""
    wrapper = sandbox.network_wrapper()
    assert wrapper in {(), ("unshare", "-n"), ("unshare", "-rn")}
    assert sandbox.network_wrapper() is wrapper


def test_process_creation_is_blocked() -> None:
    assert run_one("import subprocess\nsubprocess.run(['true'])\n") == 0.0
    assert run_one("import os\nos.system('true')\n") == 0.0


def test_huge_output_fails() -> None:
    start = time.monotonic()
    assert run_one("while True:\n    print('x' * 1000)\n", {"input": "", "output": "x"}) == 0.0
    assert time.monotonic() - start < 10
    shout = "print('x' * 20)\n"
    assert run_one(shout, {"input": "", "output": "x" * 20}, max_output_bytes=100) == 1.0
    assert run_one(shout, {"input": "", "output": "x" * 20}, max_output_bytes=10) == 0.0


@pytest.mark.parametrize(
    "code",
    [
        "\x00\x00",
        "x = '\ud800'\n",
        "(" * 10_000,
        "def f(:\n",
        "import sys\nsys.setrecursionlimit(10**6)\ndef f(n): return f(n + 1)\nf(0)\n",
    ],
)
def test_broken_programs_fail(code: str) -> None:
    assert run_one(code) == 0.0
