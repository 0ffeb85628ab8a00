"""COOKIE pretraining: one loop for cached (frozen-encoder) and live (fine-tuned encoder) runs.

Single process::

    python -m cookie_lib.train --profile default --out runs/cookie-s0 [--set loss.visual=0 ...] [--resume]

Several processes (gloo on CPU, NCCL on GPU); negatives come from the global batch::

    torchrun --nproc_per_node 2 -m cookie_lib.train --profile default --out runs/ddp

Each step takes ``batch_size`` images per process; every image brings two views and two captions
(see :mod:`cookie_lib.losses`). Frozen encoders are read from the feature cache; an unfrozen encoder
runs live on every step. A checkpoint (model, optimiser, scheduler, RNG states, data position, config,
metrics) is written atomically every ``checkpoint_every`` epochs and when the run is interrupted
(Ctrl-C / SIGTERM), and ``--resume`` continues bit-for-bit on CPU.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .config import Config, add_override_argument, load_config, parse_overrides, resolve_path
from .data import KarpathyCorpus, load_corpus
from .evaluate import evaluate_split
from .features import ImageTokens, SplitFeatures, TextTokens, split_features
from .losses import CookieLoss
from .model import CookieModel, build_encoders, visual_tokens_for
from .prefix import encoder_tails, finetuning, prefix_config, prefix_encoders
from .runtime import (CheckpointError, RunLock, atomic_save, atomic_write_json, cli, init_distributed,
                      is_main_process, manifest, pick_device, seed_everything)
from .step import (CookieStep, NonFiniteLossError, build_optimizer, build_scheduler, epoch_batches, step_generator,
                   train_step)

# NonFiniteLossError is re-exported: Trainer.run raises it (the step itself lives in cookie_lib.step)
__all__ = ["Trainer", "RunState", "NonFiniteLossError", "main"]


# ----------------------------------------------------------------------------- the run
@dataclass
class RunState:
    """What a checkpoint restores besides the weights: position, history and metrics so far."""
    epoch: int = 0  # next epoch to run
    step_in_epoch: int = 0  # batches of that epoch already done
    global_step: int = 0
    history: list[dict] = field(default_factory=list)  # per optimiser step: losses, temperatures, lr
    epochs: list[dict] = field(default_factory=list)  # per epoch: validation metrics, time
    plateau_epoch: int | None = None  # the epoch after which the plateau rule stopped the run (None: it did not)


def plateau_reached(val_mr: list[float], delta: float, patience: int) -> bool:
    """The plateau rule: each of the last ``patience`` epochs gained less than ``delta`` points of
    validation mR, i.e. ``mR[e] - mR[e-1] < delta`` for the last ``patience`` values of e (a fall counts as
    no gain). ``val_mr`` [epochs so far] holds mR = RSUM / 6 after each epoch; False while it is shorter
    than ``patience + 1`` or when ``delta`` is 0 (the rule is off)."""
    if not delta or len(val_mr) < patience + 1:
        return False
    return all(b - a < delta for a, b in zip(val_mr[-patience - 1:-1], val_mr[-patience:]))


def _capture_rng() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Builds data, model, optimiser from a Config; ``run()`` trains (resuming if asked) and evaluates."""

    def __init__(self, cfg: Config, out_dir: str | Path, progress: bool = True,
                 corpus: KarpathyCorpus | None = None, encoders: tuple | None = None):
        self.cfg, self.out = cfg, Path(out_dir)
        self.progress = progress
        t = cfg.train
        self.rank, self.world, local_rank = init_distributed()
        self.device = pick_device(t.device if t.device != "auto" or not torch.cuda.is_available()
                                  else f"cuda:{local_rank}")
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        seed_everything(t.seed)
        self.corpus = corpus or load_corpus(cfg)
        dataset = resolve_path(cfg.data.dataset)
        live_v, live_t = cfg.model.freeze_visual != "all", cfg.model.freeze_text != "all"
        if encoders is None and (live_v or live_t):
            encoders = build_encoders(cfg)
        # cached-prefix fine-tuning (cookie_lib.prefix): the caches hold the frozen prefixes' outputs and the
        # tails, built before the head's seeded initialisation, train inside the model at train.encoder_lr
        feats_cfg, tails = cfg, (None, None)
        if finetuning(cfg):
            feats_cfg, encoders, tails = prefix_config(cfg), encoders or prefix_encoders(cfg.model), encoder_tails(cfg.model)
        self.train_feats = split_features(feats_cfg, self.corpus.split("train"), "train",
                                          t.num_views if not live_v else 1, dataset, encoders, progress=progress)
        self.val_feats = split_features(feats_cfg, self.corpus.split("val"), "val", 1, dataset, encoders,
                                        progress=progress)
        visual = encoders[0].to(self.device) if live_v else None
        text = encoders[1].to(self.device) if live_t else None
        c_v = self.train_feats.image_tokens.shape[-1]
        c_t = self.train_feats.text_tokens.shape[-1]
        seed_everything(t.seed)  # the head's initialisation does not depend on what the cache step drew
        self.model = CookieModel(cfg.model, c_v, c_t, visual_tokens_for(cfg.model.image_size, cfg.model.visual_layer,
                                                                          cfg.model.visual_backbone), *tails)
        self.loss = CookieLoss(cfg.loss)
        self.images = ImageTokens(self.train_feats, visual, cfg.model.image_size, self.device,
                                  grid_flip=t.grid_flip)
        self.texts = TextTokens(self.train_feats, text, self.device)
        self.step_module = CookieStep(self.model, self.loss, self.images, self.texts, t.text_buckets).to(self.device)
        self.ddp = DistributedDataParallel(self.step_module) if self.world > 1 else None
        # 1-D parameters and the log temperatures are not decayed (cookie_lib.step.param_groups)
        self.optimizer = build_optimizer([self.model, self.loss], [visual, text, *self.model.encoder_tails()], t)
        n_train = len(self.train_feats.records)
        self.steps_per_epoch = len(epoch_batches(n_train, t.seed, 0, t.batch_size * self.world)) // t.grad_accum
        total = self.steps_per_epoch * t.epochs if not t.max_steps else min(t.max_steps, self.steps_per_epoch * t.epochs)
        self.total_steps = total
        self.scheduler = build_scheduler(self.optimizer, t.warmup_steps, total, t.min_lr_ratio)
        self.state = RunState()

    # -- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not is_main_process():
            return
        atomic_save({"step_module": self.step_module.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "rng": _capture_rng(),
                     "state": self.state.__dict__, "config": self.cfg.to_dict()}, self.checkpoint_path)

    def load_checkpoint(self) -> None:
        """Restore weights, optimiser, scheduler, RNG states and run state from ``checkpoint.pt``.

        Raises CheckpointError (a ValueError) naming the file when it cannot be read (cut short, not a
        checkpoint) or was written with another config; nothing is written or overwritten in either case.
        """
        path = self.checkpoint_path
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=False)
            missing = {"step_module", "optimizer", "scheduler", "rng", "state", "config"} - set(ckpt)
            if missing:
                raise KeyError(f"entries {sorted(missing)} are missing")
        except Exception as e:  # noqa: BLE001 - whatever the reason, the user's next step is the same
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"checkpoint {path} is unreadable ({reason}); nothing was changed. Move it away "
                                  f"to start this run over, or resume from another run folder") from e
        if ckpt["config"] != self.cfg.to_dict():
            raise CheckpointError(f"{path} was written with another config; resume needs the same one")
        self.step_module.load_state_dict(ckpt["step_module"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        _restore_rng(ckpt["rng"])
        self.state = RunState(**ckpt["state"])

    # -- loop
    def _train_step(self, step: int, batches: list[torch.Tensor], gen: torch.Generator) -> dict:
        """One optimiser step through :func:`cookie_lib.step.train_step` (kept as a method so tests can
        interrupt a run at a given step)."""
        t = self.cfg.train
        return train_step(self.ddp or self.step_module, self.optimizer, self.scheduler, self.train_feats, batches,
                          gen, step=step, batch_size=t.batch_size, rank=self.rank, amp=t.amp,
                          ddp=self.ddp is not None, checkpoint=self.checkpoint_path)

    def evaluate(self, feats: SplitFeatures | None = None) -> dict:
        feats = feats or self.val_feats
        return evaluate_split(self.model, feats, self.device, image_encoder=self.images.encoder,
                              text_encoder=self.texts.encoder, image_size=self.cfg.model.image_size)

    def run(self, resume: bool = False) -> RunState:
        """Train (continuing from ``checkpoint.pt`` when ``resume`` and it exists) and return the run state.

        The run folder's lock is held throughout (rank 0 writes; see :class:`cookie_lib.runtime.RunLock`):
        a second process training into the same folder stops at once with RunFolderLockedError.
        """
        with RunLock(self.out) if is_main_process() else nullcontext():
            return self._run(resume)

    def _run(self, resume: bool) -> RunState:
        t, st = self.cfg.train, self.state
        if resume and self.checkpoint_path.exists():
            self.load_checkpoint()
            st = self.state
        interrupted = []
        old = signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True)) if is_main_process() else None
        try:
            while (st.epoch < t.epochs and st.plateau_epoch is None
                   and not (t.max_steps and st.global_step >= t.max_steps)):
                t0 = time.perf_counter()
                self.step_module.train()
                order = epoch_batches(len(self.train_feats.records), t.seed, st.epoch, t.batch_size * self.world)
                groups = [order[i:i + t.grad_accum] for i in range(0, self.steps_per_epoch * t.grad_accum, t.grad_accum)]
                bar = tqdm(total=len(groups), initial=st.step_in_epoch, desc=f"epoch {st.epoch + 1}/{t.epochs}",
                           disable=not (self.progress and is_main_process()), leave=False)
                for s in range(st.step_in_epoch, len(groups)):
                    if t.max_steps and st.global_step >= t.max_steps:
                        break
                    gen = step_generator(t.seed, st.epoch, s)
                    rec = self._train_step(st.global_step, groups[s], gen)
                    st.history.append({"epoch": st.epoch, **rec})
                    st.global_step += 1
                    st.step_in_epoch = s + 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in rec.items() if k in self.loss.weights})
                    if interrupted:
                        raise KeyboardInterrupt("SIGTERM")
                bar.close()
                finished = st.epoch
                st.epoch, st.step_in_epoch = st.epoch + 1, 0
                if st.epoch % t.eval_every == 0 or st.epoch == t.epochs:
                    metrics = self.evaluate() if is_main_process() else {}
                    st.epochs.append({"epoch": finished + 1, "seconds": time.perf_counter() - t0, **metrics})
                    if is_main_process() and plateau_reached([e["rsum"] / 6 for e in st.epochs], t.plateau_delta,
                                                             t.plateau_patience):
                        st.plateau_epoch = st.epoch  # every rank stops: the rule's input is broadcast below
                if self.world > 1 and t.plateau_delta:
                    flag = [st.plateau_epoch]
                    dist.broadcast_object_list(flag, src=0)
                    st.plateau_epoch = flag[0]
                if t.checkpoint_every and st.epoch % t.checkpoint_every == 0:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()  # on-demand checkpoint at the exact data position; --resume continues
            raise
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
        self.save_checkpoint()
        return st

    def write_summary(self, extra: dict | None = None) -> dict:
        """metrics.json in the run folder: final validation metrics, per-epoch curve, provenance."""
        summary = manifest(self.cfg.to_dict(), final=self.state.epochs[-1] if self.state.epochs else {},
                           epochs=self.state.epochs, steps=self.state.global_step, world_size=self.world,
                           **(extra or {}))
        if is_main_process():
            with RunLock(self.out):
                atomic_write_json(summary, self.out / "metrics.json")
        return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Pretrain COOKIE (see module docstring).")
    p.add_argument("--profile", default=None, help="profiles/NAME.yaml or a path")
    p.add_argument("--out", required=True, help="run folder (checkpoint.pt, metrics.json)")
    add_override_argument(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    cfg = load_config(a.profile, parse_overrides(a.set))
    # one writer per run folder, checked before any data is read (under torchrun only rank 0 writes)
    with RunLock(a.out) if int(os.environ.get("RANK", 0)) == 0 else nullcontext():
        trainer = Trainer(cfg, a.out, progress=not a.no_progress)
        trainer.run(resume=a.resume)
        summary = trainer.write_summary()
    if is_main_process():
        print({k: round(v, 2) for k, v in summary["final"].items() if isinstance(v, float)})
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    cli(main)
