"""Standalone math-verify worker: reads JSON lines `[gold, pred]`, writes `1` or `0` per line.

It runs as a plain script (not through `multiprocessing`), so starting it never re-imports
the trainer's `__main__` (and torch with it), and it imports nothing from r1forge. The parent
enforces the time limit by killing it, so math-verify's SIGALRM timeouts are switched off.
"""

import functools
import json
import resource
import sys

# Pathological expressions (e.g. towers of powers) make sympy allocate without bound before
# the parent's timeout fires; a MemoryError just scores the answer as wrong.
_MEMORY_LIMIT = 4 << 30


def main() -> None:
    """Serve requests until stdin closes (the parent exited or dropped us)."""
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    from math_verify import parse, verify

    @functools.lru_cache(maxsize=1024)
    def parse_gold(gold: str) -> list:
        """Gold answers repeat across a group of samples, so parse each once."""
        text = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
        return parse(text, parsing_timeout=None)

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            predicted = parse("\\boxed{" + pred + "}", parsing_timeout=None)
            ok = bool(verify(parse_gold(gold), predicted, timeout_seconds=None))
        except Exception:
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()


if __name__ == "__main__":
    main()
