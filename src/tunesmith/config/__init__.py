"""Every setting, defined once as typed models, a file per section (model, data, task, lora, train,
eval, preference, grpo, output; serve and jobs for the service), composed as fields of one RunConfig.
YAML and `--set` loading, `tunesmith settings`, the jobs API's JSON Schema (and which settings a job
may set), the docs' reference and the console's forms all read these definitions."""

from tunesmith.config.base import Section, replace, setting
from tunesmith.config.data import DataConfig, RagConfig
from tunesmith.config.evaluation import EvalConfig
from tunesmith.config.grpo import GrpoConfig
from tunesmith.config.load import (
    apply_overrides,
    build_config,
    config_to_dict,
    describe_config,
    dump_config,
    load_config,
    read_yaml,
    stage_config,
    stage_name,
)
from tunesmith.config.lora import LoraConfig
from tunesmith.config.model import DEFAULT_MODEL, ModelConfig
from tunesmith.config.output import DistributedConfig, OutputConfig, RetrainConfig
from tunesmith.config.preference import PreferenceConfig
from tunesmith.config.run import RunConfig
from tunesmith.config.schema import (
    describe_settings,
    job_settings,
    job_settings_schema,
    settings_reference,
    settings_schema,
)
from tunesmith.config.service import JobsConfig, ServeConfig
from tunesmith.config.task import TaskConfig
from tunesmith.config.train import TrainConfig

__all__ = [
    "DEFAULT_MODEL", "DataConfig", "DistributedConfig", "EvalConfig", "GrpoConfig", "JobsConfig", "LoraConfig", "ModelConfig",
    "OutputConfig", "PreferenceConfig", "RagConfig", "RetrainConfig", "RunConfig", "Section", "ServeConfig",
    "TaskConfig", "TrainConfig", "apply_overrides", "build_config", "config_to_dict", "describe_config",
    "describe_settings", "dump_config", "job_settings", "job_settings_schema", "load_config", "read_yaml", "replace",
    "setting", "settings_reference", "settings_schema", "stage_config", "stage_name",
]
