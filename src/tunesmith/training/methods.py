"""The built-in training methods; importing this module registers them (see registry.register_method)."""

from tunesmith.training import (  # noqa: F401
    classify,
    extractive_qa,
    grpo,
    online_dpo,
    preference,
    pretrain,
    sft,
    token_classify,
)
