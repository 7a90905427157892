"""tunesmith: turn a general pre-trained language model into a specialist.

The Python API mirrors the CLI:

    import tunesmith
    config = tunesmith.load_config("config.yaml", ["train.learning_rate=1e-4"])
    result = tunesmith.train(config)
    print(tunesmith.generate(result.run_dir, "Say hello"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunesmith._version import __version__
from tunesmith.config import RunConfig, build_config, load_config
from tunesmith.errors import ConfigError, DataError, ModelError, RunError, TunesmithError

if TYPE_CHECKING:
    from tunesmith.training.session import RunResult


def train(config: RunConfig, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Run the training method named in `config.train.method`, then the evaluation the config asks
    for (`eval.test`); returns where everything landed."""
    from tunesmith.pipeline.train import train as train_and_evaluate

    return train_and_evaluate(config, resume=resume, show_progress=show_progress)


def generate(model: str, prompt: str, **kwargs: Any) -> str:
    """The reply of a run folder's model (or any model name) to one user prompt."""
    from tunesmith.models.generate import generate_replies, load_for_generation

    loaded = load_for_generation(model)
    return generate_replies(loaded, [prompt], **kwargs)[0]


__all__ = [
    "ConfigError", "DataError", "ModelError", "RunConfig", "RunError", "TunesmithError",
    "build_config", "generate", "load_config", "train", "__version__",
]
