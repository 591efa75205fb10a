"""SASRec (Kang & McAuley, ICDM 2018): self-attentive sequential recommendation, as a recipe.

The paper's steps:

1. **Data.** Each user's items in time order; leave-one-out: the last item is the test target, the one
   before it the validation target, the rest the training sequence.
2. **Model.** Causal self-attention over the last ``model.max_len`` items with learned positions; the
   score of item ``i`` after step ``t`` is ``<h_t, E_i>`` with the input embeddings shared
   (:class:`jaxrec.models.sasrec.SASRec`).
3. **Training.** At every position the next item is the target (``train.loss``): ``softmax`` (default)
   is the cross-entropy against all N items, stronger than the paper's objective and what full-catalog
   evaluation measures (``train.softmax_chunk`` > 0: chunked, for large catalogs); ``bce`` is the
   paper's binary cross-entropy with one sampled negative per position; ``sampled_softmax`` draws
   ``train.negatives`` items per row from a uniform or popularity ``train.proposal`` with the logQ
   correction. Adam at a constant ``train.lr``, dropout ``model.dropout``, early stopping on valid
   NDCG@10 (``train.eval_every`` epochs, ``train.patience`` validations), the best model kept.
   Training runs on the shared engine (:mod:`jaxrec.seqrec.fit`); ``train.checkpoint_dir`` makes it
   resumable.
4. **Evaluation.** Every item of the catalog is ranked for every user (the tiled kernel, ties to the
   lower id). ``eval.exclude_history`` (default **off**, as in the SASRec/TIGER protocols) removes the
   user's history items from the ranking, as S3-Rec's code does; every result names its ``protocol``.

Outputs under ``out_dir``: ``config.yaml``, ``params.safetensors`` (best valid NDCG@10),
``item_embeddings.npy`` (float32 [N, d], row = item id), ``results.json``, ``logs/``.
"""

from __future__ import annotations

from pathlib import Path

from jaxrec.data.source import load_dataset
from jaxrec.data.splits import leave_one_out
from jaxrec.models.sasrec import load_params
from jaxrec.seqrec import Config, EvalConfig, ModelConfig, TrainConfig, build_model, fit
from jaxrec.seqrec.evaluate import evaluate_model

__all__ = ["Config", "EvalConfig", "ModelConfig", "TrainConfig", "evaluate", "fit", "train"]


def train(config: Config) -> dict:
    """Train on the configured dataset's leave-one-out split; write the run directory; return the results."""
    ds = load_dataset(config.data)
    return fit(config, ds, leave_one_out(ds))


def evaluate(config: Config) -> dict:
    """Load ``out_dir/params.safetensors`` and report full-catalog valid and test metrics."""
    ds = load_dataset(config.data)
    model = build_model(config.model, ds.num_items)
    load_params(model, Path(config.out_dir) / "params.safetensors")
    return {"method": "sasrec", "data": config.data.describe(),
            **evaluate_model(model, leave_one_out(ds), config.eval)}
