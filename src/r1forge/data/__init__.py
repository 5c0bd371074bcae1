"""Datasets: record schema, validated JSONL I/O, task generators, dedupe, import, chat template."""
