"""cookie_lib: a thin library for the COOKIE replication (model, losses, data, metrics, training).

    from cookie_lib import load_config, Trainer
    cfg = load_config("default", {"loss.visual": 0.0})
    state = Trainer(cfg, "runs/no-visual").run()

    model, preprocess, tokenizer = cookie_lib.load_model("results/model/cookie.pt")   # an exported model
    model.encode_image(["a.png"]), model.encode_text(["a red apple"])                # unit embeddings [B, d]

Modules (the core): config (typed run configuration), data (Karpathy format), model (encoders,
weight-sharing transformer), prefix (cached-prefix fine-tuning), losses (the three InfoNCE losses), step
(the training step, pair sampling, optimiser groups, schedule), features (frozen-encoder cache), train,
evaluate, search, metrics, runtime (atomic writes, locks, seeds, manifests), errors (the errors a user can
act on), api (load_model: the exported-model API), modelcard. The replication study (corpora, variants
grid, the one-stream cross-encoder, verdicts, reports, benchmarks) lives in ``cookie_lib.study`` and
imports the core, never the reverse.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local directories only; never stall on a hub lookup

from .config import Config, ConfigError, load_config  # noqa: E402
from .losses import CookieLoss, info_nce  # noqa: E402
from .metrics import cross_modal_retrieval, image_retrieval, text_matching  # noqa: E402
from .model import CookieModel, TextEncoder, VisualEncoder  # noqa: E402

__all__ = ["Config", "ConfigError", "load_config", "CookieLoss", "info_nce", "cross_modal_retrieval",
           "image_retrieval", "text_matching", "CookieModel", "TextEncoder", "VisualEncoder",
           "Trainer", "load_model"]


def __getattr__(name):  # the trainer pulls in data loading; import it on first use
    if name == "Trainer":
        from .train import Trainer
        return Trainer
    if name == "load_model":  # the exported-model API (cookie_lib.api); loads the encoders on first call only
        from .api import load_model
        return load_model
    raise AttributeError(name)
