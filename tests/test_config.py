import pytest

from imgcls.core.config import TrainConfig, dump_config, load_run_config, resolve_config
from imgcls.core.errors import ImgclsError


def test_defaults_are_the_reference_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.plateau_factor, cfg.plateau_patience) == (
        1e-3,
        1e-4,
        64,
        0.5,
        3,
    )
    assert cfg.augment == "reference"


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 7\nlr: 1e-2\nbatch-size: 8\n")
    cfg = resolve_config(str(path), {"epochs": 3, "seed": None})
    assert cfg.epochs == 3 and cfg.lr == 0.01 and cfg.batch_size == 8 and cfg.seed == 42


def test_food11_reference_config_holds_the_recipe():
    cfg = resolve_config("configs/food11_reference.yaml")
    assert cfg.epochs == 100 and cfg.image_size == 224 and cfg.lr == 1e-3 and cfg.weight_decay == 1e-4


@pytest.mark.parametrize(
    "text,match",
    [("epoch: 3\n", "unknown option"), ("epochs: many\n", "epochs"), ("- 1\n", "mapping"), ("a: [\n", "YAML")],
)
def test_bad_yaml_is_a_clear_error(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ImgclsError, match=match):
        resolve_config(str(path))


def test_round_trip(tmp_path):
    cfg = resolve_config(None, {"model": "attn_cnn:num_heads=4", "epochs": 2, "pretrained": False})
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml") == cfg
