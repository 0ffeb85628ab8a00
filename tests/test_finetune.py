"""Cached-prefix partial fine-tuning (cookie_lib.prefix): prefix + tail = the whole encoder at init, a
fine-tuned run moves the tails (at train.encoder_lr) and nothing of the frozen prefix, frozen configs
serialise as before, bad keys fail with one clear line."""
import pytest
import torch

from cookie_lib.config import ConfigError, config_from_dict, load_config
from cookie_lib.data import load_karpathy
from cookie_lib.features import encode_images, encode_texts
from cookie_lib.model import TextEncoder, VisualEncoder
from cookie_lib.prefix import encoder_tails, finetuning, prefix_config, prefix_encoders, prefix_visual_layer
from cookie_lib.step import param_groups
from cookie_lib.train import Trainer

from conftest import EMOJI

FT = {"model.finetune_visual_blocks": 2, "model.finetune_text_layers": 1}


def test_frozen_config_serialises_as_before_and_roundtrips():
    cfg = load_config("default")
    d = cfg.to_dict()
    assert "finetune_visual_blocks" not in d["model"] and "finetune_text_layers" not in d["model"]
    assert config_from_dict(d).to_dict() == d and not finetuning(cfg) and prefix_config(cfg) is cfg
    tuned = load_config("default", FT)
    assert tuned.to_dict()["model"]["finetune_visual_blocks"] == 2 and finetuning(tuned)
    assert config_from_dict(tuned.to_dict()).to_dict() == tuned.to_dict()


@pytest.mark.parametrize("bad, message", [
    ({"model.finetune_visual_blocks": -1}, "model.finetune_visual_blocks=-1 is invalid"),
    ({"model.finetune_visual_blocks": 14}, "a frozen block must remain"),
    ({"model.finetune_text_layers": 7}, "model.finetune_text_layers=7 is invalid"),
    ({"model.finetune_text_layers": 1, "model.freeze_text": 2}, "the cached prefix needs a frozen encoder"),
    ({"model.finetune_visual_blocks": True}, "must be a int, not a bool"),
])
def test_bad_finetune_keys_fail_clearly(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config("default", bad)


def test_prefix_config_cuts_the_visual_layer_and_names_its_cache():
    cfg = load_config("smoke", FT)
    pre = prefix_config(cfg)
    assert prefix_visual_layer(cfg.model) == pre.model.visual_layer == 12 and cfg.model.visual_layer == 14
    assert pre.data.cache_dir == cfg.data.cache_dir + "/prefix-v2-t1"


@pytest.fixture(scope="module")
def images():
    corpus = load_karpathy(EMOJI)
    return corpus.records[:12]


def test_prefix_plus_tail_reproduces_the_full_encoders(images):
    cfg = load_config("smoke", FT)
    full_v, full_t = VisualEncoder("mobilenet_v2", "auto", "all", 14), TextEncoder("auto", "all", 16)
    pre_v, pre_t = prefix_encoders(cfg.model)
    tail_v, tail_t = encoder_tails(cfg.model)
    assert len(pre_v.blocks) == 12 and len(tail_v.blocks) == 2 and len(pre_t.bert.encoder.layer) == 5
    full_img = encode_images(images, full_v, 64, 2, seed=0, progress=False).float()  # [V, N, 16, 96]
    pre_img = encode_images(images, pre_v, 64, 2, seed=0, progress=False).float()
    with torch.no_grad():
        for mode in (False, True):  # the tail's BatchNorm uses the running statistics in train mode too
            tail_v.train(mode)
            got = torch.stack([tail_v(pre_img[v]) for v in range(2)])
            assert torch.allclose(got, full_img, atol=2e-2, rtol=1e-2), (got - full_img).abs().max()
        # in float32 (no float16 cache in between) the match is exact to rounding
        x = torch.randn(3, 3, 64, 64)
        assert torch.allclose(tail_v.eval()(pre_v(x)), full_v(x), atol=1e-5)
    texts = ["red heart", "grinning face with big eyes", "flag: Wales, dragon, wales"]
    enc = full_t.tokenize(texts)
    with torch.no_grad():
        want, mask = full_t(**enc)
        states, m = pre_t(**enc)
        got, _ = tail_t.eval()(states, m)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    # and from the float16 cache, as training reads it
    cached, cmask = encode_texts(texts, pre_t, progress=False)
    with torch.no_grad():
        got16, _ = tail_t(cached.float()[:, :mask.shape[1]], cmask[:, :mask.shape[1]])
    assert torch.allclose(got16[mask], want[mask], atol=2e-2)


def test_tails_train_at_encoder_lr_and_stay_out_of_the_head_groups():
    cfg = load_config("smoke", {**FT, "train.encoder_lr": 3e-4})
    from cookie_lib.model import CookieModel

    tails = encoder_tails(cfg.model)
    model = CookieModel(cfg.model, 96, 384, 16, *tails)
    groups = param_groups([model], model.encoder_tails(), cfg.train)
    tail_ids = {id(p) for t in tails for p in t.parameters()}
    for g in groups:
        ids = {id(p) for p in g["params"]}
        assert (ids <= tail_ids) == g["name"].startswith("encoder") and (g["lr"] == 3e-4) == g["name"].startswith("encoder")
    assert sum(len(g["params"]) for g in groups if g["name"].startswith("encoder")) == len(tail_ids)
    assert groups[0]["name"] == "head_decay"  # the logged lr stays the head's


def test_finetuned_run_moves_the_tails_and_leaves_the_prefix(tmp_path, smoke_corpus):
    cfg = load_config("smoke", {**FT, "train.encoder_lr": 1e-3, "train.max_steps": 3,
                                "data.cache_dir": str(tmp_path / "cache")})
    tr = Trainer(cfg, tmp_path / "run", progress=False, corpus=smoke_corpus)
    tail_v, tail_t = tr.model.visual_tail, tr.model.text_tail
    before = {k: v.clone() for k, v in tr.model.state_dict().items() if "_tail." in k}
    bn_stats = {k: v for k, v in before.items() if "running_" in k or "num_batches" in k}
    cache_files = sorted((tmp_path / "cache" / "prefix-v2-t1").glob("*.pt"))
    assert len(cache_files) == 2  # train and val prefix features, in their own folder
    cached = {p.name: p.read_bytes() for p in cache_files}
    assert tr.train_feats.image_tokens.shape[-2:] == (16, 96)  # block 11's output: 4 x 4 x 96
    tr.run()
    after = tr.model.state_dict()
    moved = [k for k in before if k not in bn_stats and not torch.equal(before[k], after[k])]
    assert any(k.startswith("visual_tail.") for k in moved) and any(k.startswith("text_tail.") for k in moved)
    assert all(torch.equal(bn_stats[k], after[k]) for k in bn_stats), "BatchNorm running statistics changed"
    # the frozen prefix is not part of the model, and its cached outputs are untouched
    assert {p.name: p.read_bytes() for p in cache_files} == cached
    assert not any(k.startswith(("visual_encoder.", "text_encoder.")) for k in after)
    pre_v, _ = prefix_encoders(cfg.model)
    ref = VisualEncoder("mobilenet_v2", "auto", "all", 12)
    assert all(torch.equal(a, b) for a, b in zip(pre_v.state_dict().values(), ref.state_dict().values()))
    assert tail_v.blocks[0].conv[0][1].training is False  # BatchNorm of the tail stays in eval mode
    assert tr.state.epochs and "rsum" in tr.state.epochs[-1]


def test_frozen_smoke_model_has_no_tail(smoke_corpus, tmp_path):
    cfg = load_config("smoke", {"train.max_steps": 1})
    tr = Trainer(cfg, tmp_path / "frozen", progress=False, corpus=smoke_corpus)
    assert tr.model.encoder_tails() == [] and not any("_tail." in k for k in tr.model.state_dict())
    assert all(not g["name"].startswith("encoder") for g in tr.optimizer.param_groups)


def test_grid_runs_a_finetuned_variant_on_prefix_caches(tmp_path, smoke_corpus):
    from cookie_lib.study import grid, variants

    assert variants.FINETUNED == ["ft_cookie", "ft_cross_modal_only", "ft_no_visual", "ft_no_textual"]
    assert variants.VARIANTS["ft_no_visual"] == {**variants.FINETUNE, "loss.visual": 0.0}
    extra = {"train.max_steps": 2, "data.cache_dir": str(tmp_path / "cache")}
    r = grid.run_one("smoke", "ft_cookie", 0, smoke_corpus, extra, runs_root=tmp_path / "runs", progress=False)
    assert r["config"]["model"]["finetune_visual_blocks"] == variants.FT_BLOCKS and r["variant"] == "ft_cookie"
    assert "emoji_mr" in r["test"] and r["val_epochs"]
    tag = f"prefix-v{variants.FT_BLOCKS}-t{variants.FT_BLOCKS}"
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / tag).glob("*.pt"))
    assert names == ["test", "train", "val", "wordnet"]  # training and the downstream suite read the prefix
    again = grid.run_one("smoke", "ft_cookie", 0, smoke_corpus, extra, runs_root=tmp_path / "runs", progress=False)
    assert again == r  # a finished fine-tuned run is loaded, not retrained
