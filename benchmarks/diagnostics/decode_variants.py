"""Decode ms/step at 64 rows (0.5B shape, 256 tokens, T=1) for engine variants + a kernel profile.

A one-off GPU diagnostic (CUDA only, not part of the benchmark suite): the decode step of
`grpo_step.py --only generation`, timed the same way, for the static engine with separate
and with fused q/k/v and gate/up projections (and two variants that did not help), plus
torch.profiler kernel tables of one 64-step generate per variant, and the Triton decode
attention (with `DECODE_LAUNCH`, a JSON of its launch settings). It produced
`benchmarks/results/decode_variants_h100.json` and `decode_profile_h100.txt`:

    OUT=/dev/shm/out BUDGET=230 VARIANTS=fused,fused_triton_attention \
        python benchmarks/diagnostics/decode_variants.py
"""

import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, "benchmarks")
import torch
from grpo_step import copy_bandwidth, random_prompts, timed
from sft_throughput import QWEN05, build_model, count_params, placeholder_tokenizer

from r1forge.rollout import Sampling
from r1forge.rollout.decode_attention import LAUNCH
from r1forge.rollout.static import StaticCacheEngine

OUT = Path(os.environ.get("OUT", "/tmp"))
T0 = time.time()
BUDGET = float(os.environ.get("BUDGET", "220"))
device = torch.device("cuda")
model = build_model(QWEN05, 4096, torch.bfloat16, device).eval()
model.config.use_cache = True
tok = placeholder_tokenizer(QWEN05["vocab_size"])
prompts = random_prompts(8, 64, QWEN05["vocab_size"], seed=1)
NEW = 256
results = {"gpu": torch.cuda.get_device_name()}
bw = copy_bandwidth(device)
cfg = model.config
kv = 2 * cfg.num_hidden_layers * 64 * cfg.num_key_value_heads * 64 * (64 + NEW / 2) * 2
results["floor_ms"] = 1000 * (count_params(model) * 2 + kv) / bw
print("floor ms", results["floor_ms"], flush=True)


def measure(engine):
    def fn(new):
        return engine.generate(
            prompts,
            8,
            Sampling(max_new_tokens=new, temperature=1.0, logprobs=False, ignore_eos=True),
        )

    for _ in range(2):
        fn(NEW)
        fn(1)
    full = timed(lambda: fn(NEW), 3, True)
    pre = timed(lambda: fn(1), 3, True)
    return 1000 * (full - pre) / (NEW - 1), fn


def greedy(engine):
    return [
        c.token_ids
        for c in engine.generate(
            prompts,
            1,
            Sampling(max_new_tokens=32, temperature=0.0, logprobs=False, ignore_eos=True),
        )
    ]


def profile(engine, name, steps=64):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    s = Sampling(max_new_tokens=steps + 1, temperature=1.0, logprobs=False, ignore_eos=True)
    engine.generate(prompts, 8, s)
    torch.cuda.synchronize()
    with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as p:
        engine.generate(prompts, 8, s)
        torch.cuda.synchronize()
    table = p.key_averages().table(sort_by="self_cuda_time_total", row_limit=35)
    total = sum(
        e.self_device_time_total
        for e in p.key_averages()
        if e.device_type == torch.autograd.DeviceType.CUDA
    )
    with open(OUT / "decode_profile.txt", "a") as f:
        f.write(
            f"=== {name}: kernel time total {total / 1000:.2f} ms over {steps} steps + prefill\n{table}\n"
        )
    return total / 1000 / steps


class WholeStep(StaticCacheEngine):
    """torch.compile over the whole decode step (sampling + bookkeeping too)."""

    def __init__(self, *a, mode=None, **k):
        super().__init__(*a, compile=False, **k)
        self._whole = torch.compile(
            lambda pool, live, s: StaticCacheEngine._decode_step(self, pool, live, s), mode=mode
        )

    def _decode_step(self, pool, live, sampling):
        return self._whole(pool, live, sampling)


class Autotune(StaticCacheEngine):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self._compiled = torch.compile(self._decode_logits, mode="max-autotune-no-cudagraphs")


if os.environ.get("DECODE_LAUNCH"):  # the Triton kernel's best launch from decode_attention.py
    LAUNCH.update(json.loads(os.environ["DECODE_LAUNCH"]))
FUSED, SEPARATE = {"fuse_projections": True}, {"fuse_projections": False}
variants = [  # name, engine class, its arguments, whether to profile it
    ("base", StaticCacheEngine, SEPARATE | {"attention_kernel": "flash"}, True),
    ("fused", StaticCacheEngine, FUSED | {"attention_kernel": "flash"}, True),
    ("fused_triton_attention", StaticCacheEngine, FUSED | {"attention_kernel": "triton"}, True),
    ("fused_triton_attention_autotune", Autotune, FUSED | {"attention_kernel": "triton"}, False),
    ("fused_whole_step", WholeStep, FUSED | {"attention_kernel": "flash"}, False),
    (
        "base_eager_graphs",
        StaticCacheEngine,
        SEPARATE | {"attention_kernel": "flash", "compile": False},
        False,
    ),
    ("fused_autotune", Autotune, FUSED | {"attention_kernel": "flash"}, False),
]
chosen = os.environ.get("VARIANTS")  # comma-separated names; all by default
if chosen:
    variants = [v for v in variants if v[0] in chosen.split(",")]
ref = None
for name, engine_class, arguments, prof_it in variants:
    if time.time() - T0 > BUDGET:
        print("skip", name, "budget")
        continue
    try:
        t = time.time()
        eng = engine_class(model, tok, **arguments)
        ms, _ = measure(eng)
        g = greedy(eng)
        if ref is None:
            ref = g
        agree = sum(
            a == b for r, s in zip(g, ref, strict=False) for a, b in zip(r, s, strict=False)
        ) / sum(map(len, ref))
        results[name] = {
            "decode_ms_per_step": ms,
            "roofline_fraction": results["floor_ms"] / ms,
            "greedy_agreement_vs_first": agree,
            "seconds": time.time() - t,
        }
        if prof_it and time.time() - T0 < BUDGET:
            results[name]["kernel_ms_per_step_graphs"] = profile(eng, name + " (graphs)")
        print(name, results[name], flush=True)
        del eng
    except Exception as e:
        traceback.print_exc()
        results[name] = {"error": repr(e)[:500]}
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    (OUT / "decode_variants.json").write_text(json.dumps(results, indent=2))
print(json.dumps(results, indent=2))
