"""r1forge: the DeepSeek-R1 recipe as a platform (SFT, GRPO, rejection sampling, distillation, serving)."""

__version__ = "0.1.0"
