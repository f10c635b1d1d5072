"""The training harness (``pip install 'vqkit[train]'``): configs, the DDP training loop, evaluation, reports.

The library core (quantizers, functional, metrics of codes) never imports this package.
"""

from vqkit.train.config import ConfigError, EvalConfig, RunConfig, TrainConfig, load_config
from vqkit.train.evaluate import evaluate
from vqkit.train.loop import train

__all__ = ["ConfigError", "EvalConfig", "RunConfig", "TrainConfig", "evaluate", "load_config", "train"]
