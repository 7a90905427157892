"""The built-in training methods; importing this module registers them (see session.register_method)."""

from tunesmith.training import classify, pretrain, sft  # noqa: F401
