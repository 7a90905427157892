"""The built-in training methods; importing this module registers them (see registry.register_method)."""

from tunesmith.training import classify, online_dpo, preference, pretrain, sft  # noqa: F401
