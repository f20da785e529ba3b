"""``--freeze PATTERN``: module-name (or parameter-name) globs whose weights stay fixed during training."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from imgcls.core.errors import ImgclsError


def match_frozen(model: nn.Module, patterns: list[str] | None) -> list[str]:
    """The module and parameter names the patterns select, outermost only; a pattern that matches
    nothing is an error that lists the model's top-level modules."""
    if not patterns:
        return []
    names = [n for n, _ in model.named_modules() if n] + [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            top = ", ".join(n for n, _ in model.named_children())
            raise ImgclsError(f"--freeze {pattern!r} matches no module or parameter; top-level modules: {top}")
        chosen.update(hits)
    return sorted(n for n in chosen if not any(n.startswith(other + ".") for other in chosen))


def apply_freeze(model: nn.Module, names: list[str]) -> None:
    for name in names:
        target = _lookup(model, name)
        target.requires_grad_(False)


def freeze_eval_mode(model: nn.Module, names: list[str]) -> None:
    """BatchNorm and Dropout inside frozen modules behave as at evaluation (statistics kept, no dropout)."""
    for name in names:
        target = _lookup(model, name)
        if isinstance(target, nn.Module):
            target.eval()


def _lookup(model: nn.Module, name: str):
    try:
        return model.get_submodule(name)
    except AttributeError:
        return model.get_parameter(name)
