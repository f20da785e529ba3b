"""Each recipe knob acts as documented (all are off by default: the reference recipe is unchanged)."""

import json
import math

import pytest
import torch

from imgcls.core.config import TrainConfig, resolve_config
from imgcls.core.errors import ImgclsError
from imgcls.engine.recipe import (
    TrainLoss,
    balanced_class_weights,
    build_optimizer,
    build_schedule,
    warmup_scale,
    warmup_steps,
)

from conftest import train_tiny


def test_defaults_are_the_reference_recipe():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.scheduler, cfg.warmup_epochs, cfg.label_smoothing, cfg.mixup, cfg.cutmix) == (
        "adam",
        "plateau",
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert (cfg.ema, cfg.class_weights, cfg.sampler, cfg.logger) == (None, "none", "shuffle", None)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    assert type(opt) is torch.optim.Adam and opt.defaults["weight_decay"] == 1e-4


def test_label_smoothing_changes_the_loss_as_the_formula_says():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    eps = 0.1
    loss = TrainLoss(resolve_config(None, {"label_smoothing": eps}), 5)(logits, y)
    log_p = logits.log_softmax(1)
    expected = ((1 - eps) * -log_p.gather(1, y[:, None]).squeeze(1) + eps * -log_p.mean(1)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert not torch.allclose(loss, TrainLoss(TrainConfig(), 5)(logits, y))


def test_balanced_class_weights_and_weighted_loss():
    labels = [0] * 30 + [1] * 10
    w = balanced_class_weights(labels, 2)
    assert torch.allclose(w, torch.tensor([40 / 60, 40 / 20]))
    logits, y = torch.randn(6, 2), torch.tensor([0, 0, 0, 1, 1, 0])
    loss = TrainLoss(resolve_config(None, {"class_weights": "balanced"}), 2, w)(logits, y)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, y, weight=w))


def test_balanced_sampler_draws_classes_evenly():
    from torch.utils.data import TensorDataset

    from imgcls.data.loader import make_loader

    labels = [0] * 900 + [1] * 100
    ds = TensorDataset(torch.arange(1000), torch.tensor(labels))
    loader = make_loader(ds, batch_size=100, workers=0, shuffle=True, seed=0, labels=labels)
    drawn = torch.cat([b[1] for b in loader])
    assert len(drawn) == 1000 and abs(int((drawn == 1).sum()) - 500) < 60


def test_mixup_makes_soft_targets_and_mixed_images():
    cfg = resolve_config(None, {"mixup": 0.4})
    loss_fn = TrainLoss(cfg, 4)
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    mixed, target = loss_fn.mix(x.clone(), y)
    assert target.shape == (8, 4) and torch.allclose(target.sum(1), torch.ones(8))
    assert not torch.allclose(mixed, x)
    logits = torch.randn(8, 4)
    assert torch.allclose(loss_fn(logits, target), -(target * logits.log_softmax(1)).sum(1).mean())


def test_schedules_warm_up_then_decay():
    def lrs(scheduler, total=100, warmup_epochs=1.0, per_epoch=10):
        """The rate each step runs at: the schedule's times the one warm-up (as the module applies it)."""
        cfg = resolve_config(None, {"scheduler": scheduler, "warmup_epochs": warmup_epochs, "lr": 0.1})
        opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
        warmup = warmup_steps(cfg, per_epoch)
        sched = build_schedule(opt, cfg, total, warmup)["scheduler"]
        out = []
        for step in range(total):
            out.append(opt.param_groups[0]["lr"] * warmup_scale(step, warmup))
            opt.step()
            sched.step()
        return out

    cos = lrs("cosine")
    assert math.isclose(cos[0], 0.001) and math.isclose(max(cos), cos[10]) and math.isclose(cos[10], 0.1)
    assert cos[-1] < 0.001 and all(a >= b for a, b in zip(cos[10:], cos[11:]))
    one = lrs("onecycle")
    assert one[0] < 0.01 and max(one) == pytest.approx(0.1, rel=0.01) and one[-1] < 1e-3


def test_sgd_with_nesterov():
    cfg = resolve_config(None, {"optimizer": "sgd", "momentum": 0.8, "nesterov": True})
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    assert type(opt) is torch.optim.SGD and opt.defaults["momentum"] == 0.8 and opt.defaults["nesterov"]


def test_plateau_warmup_starts_low(demo_data, tmp_path):
    paths = train_tiny(demo_data, tmp_path / "w", epochs=2, warmup_epochs=1)
    from imgcls.core.rundir import read_metrics

    rows = [r["lr"] for r in read_metrics(paths.metrics)]
    assert rows[0] == pytest.approx(1e-5) and rows[1] == pytest.approx(1e-3)


def test_ema_weights_are_what_is_checkpointed_and_evaluated(demo_data, tmp_path):
    from imgcls.commands.evaluate import evaluate
    from imgcls.models.weights import load_state_dict_file

    paths = train_tiny(demo_data, tmp_path / "e", epochs=2, ema=0.9)
    last, best = load_state_dict_file(paths.last), load_state_dict_file(paths.best)
    averaged, raw = last["state_dict"], last["current_model_state"]
    changed = [
        k
        for k in averaged
        if k.startswith("model.") and averaged[k].is_floating_point() and not torch.equal(averaged[k], raw[k])
    ]
    assert changed  # the checkpoint's weights are the averaged ones; the raw ones are kept for resuming
    # best.ckpt holds the averaged weights only: no optimizer state, no raw weights (never read back).
    assert not {"optimizer_states", "lr_schedulers", "current_model_state"} & set(best)
    summary = json.loads(paths.summary.read_text())
    if summary["best_epoch"] == 2:
        assert all(torch.equal(best["state_dict"][k], averaged[k]) for k in averaged)
    r = evaluate(paths.root, split="validation", workers=0, engine="torch")
    assert r["top1"] == pytest.approx(summary["best_val_acc"], abs=1e-6)


def test_cutmix_refuses_a_feature_cache_and_mixup_mixes_cached_activations(demo_data, tmp_path, monkeypatch):
    with pytest.raises(ImgclsError, match="not cached features"):
        train_tiny(demo_data, tmp_path / "c", model="efficientnet_lite0", cutmix=1.0, feature_cache=2)
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    targets = []
    original = TrainLoss.forward

    def spy(self, logits, target):
        targets.append(target.dim())
        return original(self, logits, target)

    monkeypatch.setattr(TrainLoss, "forward", spy)
    paths = train_tiny(
        demo_data, tmp_path / "m", model="efficientnet_lite0", finetune="last:2", mixup=0.4, feature_cache=2, epochs=1
    )
    assert json.loads(paths.summary.read_text())["epochs_completed"] == 1
    assert 2 in targets  # soft targets: the cached activations were mixed (manifold mixup)


def _plan_without_data(cfg):
    from imgcls.core.config import parse_finetune
    from imgcls.data.layouts import DatasetSplits
    from imgcls.plan import ModelChoice, RunPlan

    splits = DatasetSplits("", "", [f"c{i}" for i in range(cfg.num_classes)], [], [])
    keep = parse_finetune(cfg.finetune)
    return RunPlan(
        cfg=cfg, model=ModelChoice.parse(cfg.model), task="single", keep=keep, cuda=False, devices=1, splits=splits
    )


def test_lr_decay_gives_each_block_its_rate(demo_data):
    from imgcls.engine.build import build_module
    from imgcls.models.blocks import model_sequence

    cfg = resolve_config(None, {"model": "efficientnet_lite0", "num_classes": 3, "finetune": "last:3", "lr": 1e-3})
    cfg = resolve_config(None, {**cfg.to_dict(), "lr_decay": 0.5, "pretrained": False, "image_size": 32})
    module = build_module(_plan_without_data(cfg))
    groups = module.param_groups()
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1.25e-4])
    stages = [s for s in model_sequence(module.model) if s.block]
    head_ids = {id(p) for p in stages[-1].module.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head_ids
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in module.parameters())
    one = build_module(_plan_without_data(resolve_config(None, {**cfg.to_dict(), "lr_decay": 1.0})))
    assert len(one.param_groups()) == 1


def test_tta_flip_averages_the_mirror_image(tiny_run, demo_data):
    import dataclasses

    from imgcls.data.layouts import discover
    from imgcls.engine.predictor import load_predictor, predict_samples

    predictor = load_predictor(tiny_run, engine="torch")
    samples = discover(demo_data).test[:6]
    plain, _ = predict_samples(predictor, samples, workers=0)
    both, _ = predict_samples(predictor, samples, workers=0, tta="flip")
    mirrored = dataclasses.replace(predictor, run=lambda x: predictor.run(x.flip(3)))
    flipped, _ = predict_samples(mirrored, samples, workers=0)
    assert torch.allclose(both, (plain + flipped) / 2, atol=1e-6) and not torch.allclose(both, plain)


def test_lr_find_plots_and_suggests(demo_data, tmp_path, capsys):
    from imgcls.cli import main

    plot = tmp_path / "lr.png"
    code = main(
        [
            "lr-find",
            "--model",
            "attn_cnn",
            "--data",
            str(demo_data),
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--steps",
            "30",
            "--plot",
            str(plot),
        ]
    )
    assert code == 0 and plot.stat().st_size > 5000 and "learning rate" in capsys.readouterr().out


def test_loggers_write_their_files(demo_data, tmp_path):
    paths = train_tiny(demo_data, tmp_path / "l", epochs=1, logger=["csv"])
    assert (paths.root / "logs" / "csv" / "metrics.csv").is_file() and paths.metrics.is_file()
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ImgclsError, match=r"pip install 'imgcls\[tensorboard\]'"):
            train_tiny(demo_data, tmp_path / "t", epochs=1, logger=["tensorboard"])
    else:
        paths = train_tiny(demo_data, tmp_path / "t", epochs=1, logger=["tensorboard"])
        assert list((paths.root / "logs" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("spec", ["timm:resnet10t", "tv:mobilenet_v3_small"])
def test_timm_and_torchvision_models_train_and_export(demo_data, tmp_path, spec):
    from imgcls.commands.export import export

    paths = train_tiny(demo_data, tmp_path / "m", model=spec, epochs=1, image_size=32, pretrained=False)
    summary = json.loads(paths.summary.read_text())
    assert summary["params"] > 0 and summary["gflops"] > 0
    assert export(paths.root, "onnx")["max_prob_diff"] <= 1e-4


def test_timm_last_n_uses_the_model_blocks():
    from imgcls.models import create_model
    from imgcls.models.blocks import blocks, split

    model = create_model("timm:resnet10t", 5, image_size=64).eval()
    assert blocks(model)[:2] == ["stem", "layer1.0"]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        prefix, suffix = split(model, 2)
        assert torch.equal(suffix(prefix(x)), model(x))


def test_unknown_and_offline_hub_models(monkeypatch):
    from imgcls.models import create_model

    with pytest.raises(ImgclsError, match="unknown timm model"):
        create_model("timm:no_such_net", 5)
    monkeypatch.setenv("IMGCLS_OFFLINE", "1")
    with pytest.raises(ImgclsError, match="repository: timm/resnet10t") as info:
        create_model("timm:resnet10t.c3_in1k", 5, pretrained=True)
    assert "folder:" in str(info.value) and "--no-pretrained" in str(info.value)


def test_models_all_with_a_filter(capsys):
    from imgcls.cli import main

    assert main(["models", "--all", "--filter", "resnet10"]) == 0
    out = capsys.readouterr().out
    assert "timm:resnet10t" in out and "params with a 11-class head" in out
