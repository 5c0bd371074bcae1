"""Training loops: pre-training of the tiny base (and, as the recipe grows, SFT, GRPO, distillation)."""
