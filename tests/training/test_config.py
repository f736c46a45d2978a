"""TrainConfig: shipped configs, strict YAML loading, overrides, the CLI's defaults."""

import dataclasses

import pytest
import yaml

from hvx.model import list_variants
from hvx.training import cli
from hvx.training.config import TrainConfig, dump_config, list_configs, load_config

SHIPPED = {
    "paper",
    "hovernet_baseline",
    "convnext",
    "convnext_affine",
    "convnext_6ch_sam_ufl",
    "cpu",
}


def test_shipped_configs_load_and_round_trip():
    assert set(list_configs()) >= SHIPPED
    for name in list_configs():
        cfg = load_config(name)
        assert cfg.name == name
        assert cfg.model.variant in list_variants()
        again = TrainConfig.from_dict(yaml.safe_load(dump_config(cfg)))
        assert again == cfg


def test_paper_recipe():
    cfg = load_config("paper")
    assert cfg.model.variant == "convnext_small"
    assert cfg.preprocess.mode == "6ch" and cfg.in_chans == 6
    assert cfg.augment.affine is True
    assert (cfg.loss.np_ufl, cfg.loss.np_dice, cfg.loss.np_ce) == (1.0, 1.0, 0.0)
    assert (cfg.loss.tp_ufl, cfg.loss.tp_dice, cfg.loss.tp_ce) == (1.0, 1.0, 0.0)
    assert (cfg.loss.ufl_weight, cfg.loss.ufl_delta, cfg.loss.ufl_gamma) == (0.5, 0.6, 0.5)
    assert cfg.optim.sam and cfg.optim.rho == 0.05
    assert (cfg.optim.step_size, cfg.optim.gamma) == (25, 0.1)
    # the Table I row that ends at the paper's recipe is the same recipe
    assert dataclasses.replace(load_config("convnext_6ch_sam_ufl"), name="paper") == cfg


def test_table_one_ablation_ladder():
    base, cnx, aff, full = (
        load_config(n) for n in ("hovernet_baseline", "convnext", "convnext_affine", "paper")
    )
    assert base.model.variant == "hovernet_resnet50" and cnx.model.variant == "convnext_small"
    assert dataclasses.replace(cnx, name="x", model=base.model) == dataclasses.replace(
        base, name="x"
    )
    assert not cnx.augment.affine and aff.augment.affine
    assert dataclasses.replace(aff, name="x", augment=cnx.augment) == dataclasses.replace(
        cnx, name="x"
    )
    for cfg in (base, cnx, aff):
        assert cfg.preprocess.mode == "rgb" and not cfg.optim.sam and cfg.optim.weight_decay == 0
        assert cfg.loss.np_ce == 1 and cfg.loss.np_ufl == 0
    assert full.preprocess.mode == "6ch" and full.optim.sam and full.loss.np_ufl == 1


def test_cpu_recipe_is_light():
    cfg = load_config("cpu")
    assert cfg.model.variant.startswith("fast_") or cfg.model.variant == "convnext_atto"
    assert cfg.data.crop_size <= 128 and cfg.batch_size <= 8


def test_unknown_key_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(
        ValueError, match=r"bad.yaml: unknown key 'optim.lrr'; expected one of .*lr"
    ):
        load_config(p)
    p.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"unknown key 'epochz'"):
        load_config(p)
    p.write_text("preprocess:\n  modee: rgb\n")
    with pytest.raises(ValueError, match=r"unknown key 'preprocess.modee'"):
        load_config(p)


def test_wrong_types_and_ranges(tmp_path):
    p = tmp_path / "bad.yaml"
    for text, msg in (
        ("epochs: 2.5\n", r"expected epochs of type int, got 2.5"),
        ("optim: {sam: 'yes'}\n", r"expected optim.sam of type bool, got 'yes'"),
        ("epochs: 0\n", r"expected epochs >= 1, got 0"),
        ("best_metric: dice\n", r"expected best_metric one of \['mpq_plus', 'pq'\]"),
        ("data: {scale: 0}\n", r"expected data.scale in \(0, 4\], got 0"),
        ("data: {epoch_repeats: 0}\n", r"expected data.epoch_repeats >= 1, got 0"),
        ("optim: {budget_decay: 1.0}\n", r"expected optim.budget_decay in \(0, 1\) or null"),
        ("amp_dtype: half\n", r"expected amp_dtype one of \['float16', 'bfloat16'\]"),
        ("optim: {betas: [0.9]}\n", r"expected optim.betas of type"),
        ("- 1\n", r"expected a mapping at the top level, got list"),
        ("a: [\n", r"invalid YAML"),
    ):
        p.write_text(text)
        with pytest.raises(ValueError, match=msg):
            load_config(p)
    with pytest.raises(ValueError, match=r"expected a config name \(.*cpu.*\) or a YAML file path"):
        load_config("no_such_config")


def test_partial_yaml_keeps_defaults_and_int_becomes_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 1}\ndata: {class_map: {1: 0}, class_names: [a, b]}\n")
    cfg = load_config(p)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.rho == TrainConfig().optim.rho
    assert cfg.data.class_map == {1: 0} and cfg.data.class_names == ("a", "b")


def test_exponent_without_a_dot_is_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 4e-4 as the string "4e-4": --set optim.lr=4e-4 must still work
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 4e-4, weight_decay: 1E2}\n")
    cfg = load_config(p)
    assert cfg.optim.lr == 4e-4 and cfg.optim.weight_decay == 100.0
    assert load_config("cpu").replace({"optim.lr": "5e-5"}).optim.lr == 5e-5
    for bad in ("fast", "nan", "1e", "e5", "inf"):
        with pytest.raises(ValueError, match=r"expected optim\.lr of type float"):
            load_config("cpu").replace({"optim.lr": bad})


def test_init_from_and_finetune_from_exclude_each_other():
    with pytest.raises(ValueError, match=r"at most one of model\.init_from"):
        load_config("cpu").replace({"model.init_from": "a.pth", "model.finetune_from": "b"})


def test_replace_with_dotted_overrides():
    cfg = load_config("cpu")
    new = cfg.replace({"epochs": 3, "optim.lr": 0.5, "seed": None, "augment.affine": False})
    assert (new.epochs, new.optim.lr, new.seed, new.augment.affine) == (3, 0.5, cfg.seed, False)
    with pytest.raises(ValueError, match=r"override 'optim.lrr': unknown key 'lrr'"):
        cfg.replace({"optim.lrr": 1})


def test_cli_yaml_sets_defaults_and_unset_options_do_not_override():
    cfg = load_config("cpu")
    args = cli.build_parser(cfg).parse_args(["--config", "cpu", "--data", "d", "--out", "o"])
    assert args.epochs == cfg.epochs and args.lr == cfg.optim.lr and args.seed == cfg.seed
    args = cli.build_parser(cfg).parse_args(["--config", "cpu", "--epochs", "7"])
    assert args.epochs == 7 and args.batch_size == cfg.batch_size


def test_cli_errors(capsys):
    assert cli.main(["--config", "nope", "--data", "d", "--out", "o"]) == 2
    assert "expected a config name" in capsys.readouterr().err
    assert cli.main(["--list-configs"]) == 0
    assert "paper" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--config", "cpu"])  # no --data / --out
    assert cli.main(["--config", "cpu", "--data", "d", "--out", "o", "--set", "x"]) == 2
    assert "--set: expected KEY=VALUE, got 'x'" in capsys.readouterr().err
