"""The train flags are one table keyed by TrainConfig setting: every setting has a flag or is named internal, the
original project's flags are there, and a command line becomes the TrainConfig it spells."""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields

import pytest

from gctxseg.cli import ARCHITECTURE_FLAGS, INTERNAL_SETTINGS, TRAIN_FLAGS, build_parser, main, train_config
from gctxseg.core.console import flag_name
from gctxseg.training import TrainConfig
from gctxseg.training.config import resume_config

# the seed project's train.py flags, spelled as it spelled them
ORIGINAL_FLAGS = ("--img_f", "--mask_f", "--base-size", "--data-train", "--data-val", "--batch-size", "--epochs",
                  "--lr", "--lrf", "--ct", "--results", "--name", "--model", "--seed", "--device", "--workers")


def _command_parser(command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _options(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _command_parser(command)._actions if a.dest != "help"}


def test_every_train_config_setting_has_a_flag_or_is_listed_internal():
    settings = {f.name for f in fields(TrainConfig)}
    assert set(TRAIN_FLAGS) | set(INTERNAL_SETTINGS) == settings  # a new setting must be placed in one of them
    assert not set(TRAIN_FLAGS) & set(INTERNAL_SETTINGS)


def test_the_train_parser_sets_every_flagged_setting_and_nothing_else():
    options = _options("train")
    flagged = set(TRAIN_FLAGS) - {"model_options"}
    assert set(options) == flagged | set(ARCHITECTURE_FLAGS)
    for name in flagged:
        assert options[name].option_strings == [flag_name(name)], name
        assert options[name].default == getattr(TrainConfig(), name), name  # a flag left out = the setting's default
    assert set(_options("cv")) - {"data", "summary_only", "models", "no_race"} == set(options) - {"schedule_from"}


def test_train_help_lists_the_original_projects_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for flag in ORIGINAL_FLAGS:
        assert f"  {flag} " in out or f"  {flag}\n" in out, flag
    assert "--base-size H W" in out and "(default .jpg)" in out and "(default 0.002)" in out


def test_an_original_style_command_line_gives_the_train_config_it_spells():
    argv = ["train", "--img_f", ".png", "--mask_f", ".bmp", "--base-size", "128", "256",
            "--data-train", "d/train/images", "--data-val", "d/val/images", "--batch-size", "8", "--epochs", "50",
            "--lr", "0.001", "--lrf", "0.01", "--results", "out", "--name", "first", "--model", "unet",
            "--model-option", "base_width=8", "--seed", "3", "--device", "cpu", "--workers", "0", "--fg-share", "0.25",
            "--amp", "off"]
    cfg = train_config(build_parser().parse_args(argv))
    expected = TrainConfig(img_f=".png", mask_f=".bmp", base_size=(128, 256), data_train="d/train/images",
                           data_val="d/val/images", batch_size=8, epochs=50, lr=0.001, lrf=0.01, results="out",
                           name="first", model="unet", model_options={"base_width": 8}, seed=3, device="cpu",
                           workers=0, foreground_share=0.25, amp="off")
    assert asdict(cfg) == asdict(expected)
    # flags left out are planned later (None), not filled in here
    assert cfg.weight_decay is None and cfg.warmup_epochs is None and cfg.augment is None and cfg.val_every is None


def test_cv_takes_its_data_positional_and_its_own_defaults():
    args = build_parser().parse_args(["cv", "d/images", "--epochs", "1"])
    cfg = train_config(args, data_train=args.data)
    assert (cfg.data_train, cfg.folds, cfg.name, cfg.epochs) == ("d/images", 5, "cv", 1)
    assert "(default cv)" in _command_parser("cv").format_help()


def test_a_resumed_run_names_the_ignored_settings_by_the_flags_typed(capsys):
    saved = {"config": asdict(TrainConfig())}
    resume_config(TrainConfig(resume="x.pt", foreground_share=0.3, model_options={"embed_dim": 32}), saved,
                  {"foreground_share", "model_options", "resume"})
    err = capsys.readouterr().err
    assert "--resume: ignoring --fg-share, --model-option:" in err
