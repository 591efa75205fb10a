"""Sequential recommenders trained on a leave-one-out split (SASRec): config, batches, fit, evaluation.

The layer between ``index`` and ``methods``: the SASRec recipe (:mod:`jaxrec.methods.sasrec`) and the
recipes that need a SASRec's item embeddings (TIGER's index source, RSLLM's ID model) all call :func:`fit`.
"""

from jaxrec.seqrec.config import Config, EvalConfig, ModelConfig, TrainConfig
from jaxrec.seqrec.fit import build_model, fit

__all__ = ["Config", "EvalConfig", "ModelConfig", "TrainConfig", "build_model", "fit"]
