import numpy as np
import torch
from PIL import Image
from torch import nn

from imgcls.data.demo import DEMO_CLASSES, write_demo_dataset
from imgcls.data.layouts import discover


def test_demo_data_is_deterministic_and_in_food11_flat_layout(tmp_path):
    a = write_demo_dataset(tmp_path / "a", per_class=3, size=24, seed=5)
    b = write_demo_dataset(tmp_path / "b", per_class=3, size=24, seed=5)
    c = write_demo_dataset(tmp_path / "c", per_class=3, size=24, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    s = discover(a)
    assert s.layout == "flat" and s.classes == DEMO_CLASSES and s.test_labeled
    assert len(s.train) == 33 and len(s.val) == 11 * 2 and len(s.test) == 22


def _pixels(samples):
    x = np.stack([np.asarray(Image.open(s.path).convert("RGB")) for s in samples])
    return torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2) / 255, torch.tensor([s.label for s in samples])


def _fit(model, x, y, xv, yv, epochs, lr=1e-3, wd=0.0):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(xv).argmax(1) == yv).float().mean())


def test_linear_model_on_pixels_stays_well_below_a_small_cnn(tmp_path):
    s = discover(write_demo_dataset(tmp_path / "d", per_class=60, size=32, seed=1))
    x, y = _pixels(s.train)
    xv, yv = _pixels(s.val)
    mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)
    x, xv = (x - mean) / std, (xv - mean) / std
    torch.manual_seed(0)
    linear = _fit(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 11)), x, y, xv, yv, 30, wd=1e-3)
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 11),
    )
    cnn_acc = _fit(cnn, x, y, xv, yv, 15)
    print(
        f"\ndemo data, 11 classes, 660 train / 198 val at 32 px: linear on pixels {linear:.3f}, small CNN {cnn_acc:.3f}"
    )
    assert cnn_acc >= 0.45
    assert linear <= 0.25
    assert cnn_acc - linear >= 0.25
