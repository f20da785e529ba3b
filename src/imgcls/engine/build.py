"""What a plan trains: the LightningModule (the model cut at the plan's fine-tune point) and the data
module that feeds it (images through loader workers, the decoded image store, or the feature cache)."""

from __future__ import annotations

from imgcls.core.errors import ImgclsError
from imgcls.engine.module import ClassifierModule
from imgcls.models.blocks import split
from imgcls.models.freeze import match_frozen
from imgcls.plan import RunPlan


def build_module(plan: RunPlan) -> ClassifierModule:
    """head / last:N: the suffix (head, or last N blocks + head) trains, fed by the frozen prefix (or,
    with the feature cache, by batches of its cached output); full: the whole model trains."""
    cfg = plan.cfg
    model = plan.model.build(cfg.num_classes, pretrained=cfg.pretrained, image_size=cfg.image_size)
    prefix, suffix = split(model, plan.keep) if plan.cut else (None, None)
    class_weights = pos_weight = None
    labels = [s.label for s in plan.splits.train]
    if cfg.class_weights == "balanced":
        from imgcls.engine.recipe import balanced_class_weights

        class_weights = balanced_class_weights(labels, cfg.num_classes)
    if cfg.pos_weight == "balanced":
        from imgcls.engine.recipe import balanced_pos_weight

        pos_weight = balanced_pos_weight(labels, cfg.num_classes)
    module = ClassifierModule(
        model,
        num_classes=cfg.num_classes,
        recipe=cfg,
        class_weights=class_weights,
        pos_weight=pos_weight,
        suffix=suffix,
        prefix=prefix,
        cached=bool(cfg.feature_cache),
        frozen=match_frozen(model, cfg.freeze),
    )
    if not any(p.requires_grad for p in module.parameters()):
        raise ImgclsError(
            f"--freeze {' '.join(cfg.freeze or [])} freezes everything --finetune {cfg.finetune} would train: "
            "nothing is left to train"
        )
    if cfg.batch_size == 1 and module.train().has_batchnorm:  # before the run folder is written
        raise ImgclsError(
            f"--batch-size 1 cannot train {cfg.model}: its BatchNorm layers need at least 2 images a batch"
        )
    return module


def build_datamodule(plan: RunPlan, module: ClassifierModule, *, progress: bool = True):
    if plan.cfg.feature_cache:
        return feature_datamodule(plan, module)
    return image_datamodule(plan, progress)


def image_datamodule(plan: RunPlan, progress: bool = True):
    """Images streamed from disk and augmented in loader workers, or (``--data-pipeline tensor``) read
    decoded from the image store and augmented on the device."""
    from imgcls.data.datamodule import ImageDataModule

    cfg = plan.cfg
    common = dict(
        image_size=cfg.image_size,
        augment=cfg.augment,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        seed=cfg.seed,
        balanced=cfg.sampler == "balanced",
        start_epoch=plan.start_epoch,
        num_classes=cfg.num_classes,
        eval_crop=cfg.eval_crop,
        pin_memory=plan.pin_memory,
    )
    if cfg.data_pipeline == "tensor":
        from imgcls.data.tensor_pipeline import TensorDataModule

        return TensorDataModule(plan.splits, **common, short=cfg.decode_size, progress=progress)
    return ImageDataModule(plan.splits, **common)


def feature_datamodule(plan: RunPlan, module: ClassifierModule):
    """Loaders over the frozen prefix's cached outputs (pooled features for head, activations for
    last:N); the cache is filled once per node before training."""
    from imgcls.data.transforms import build_eval_transform, build_train_transform
    from imgcls.engine.features import FeatureDataModule

    cfg = plan.cfg
    eval_tf = build_eval_transform(cfg.image_size, crop=cfg.eval_crop)
    train_tf = eval_tf if cfg.augment == "none" else build_train_transform(cfg.image_size, cfg.augment)
    return FeatureDataModule(
        module.frozen_part,
        plan.splits,
        train_transform=train_tf,
        eval_transform=eval_tf,
        views=cfg.feature_cache,
        image_size=cfg.image_size,
        seed=cfg.seed,
        identity=plan.feature_identity,
        batch_size=cfg.batch_size,
        workers=cfg.workers,
        balanced=cfg.sampler == "balanced",
        start_epoch=plan.start_epoch,
        num_classes=cfg.num_classes if plan.task == "multilabel" else None,
        pin_memory=plan.pin_memory,
    )
