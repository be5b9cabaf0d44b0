"""One source for every fitting default: FitConfig; the CLI reads its defaults from it, --config overrides
them, options given on the command line win."""

import json
from dataclasses import fields

import pytest

from headrep.commands import fit as fit_cmd
from headrep.commands.main import build_parser
from headrep.errors import HeadrepError
from headrep.fitting import FitConfig


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_follows_a_changed_default(capsys, monkeypatch):
    assert "stage 1 optimisation steps (default 300)" in _help(capsys)
    field = {f.name: f for f in fields(FitConfig)}["coarse_steps"]
    monkeypatch.setattr(field, "default", 123)
    text = _help(capsys)
    assert "stage 1 optimisation steps (default 123)" in text and "(default 300)" not in text


def _args(*argv):
    return build_parser().parse_args(["fit", "video.mp4", "-o", "out", *argv])


def test_cli_config_precedence(tmp_path):
    assert fit_cmd.config_from_args(_args()) == FitConfig()
    cfg_file = tmp_path / "fit.json"
    cfg_file.write_text(json.dumps({"coarse_steps": 50, "w_normal": 0.7, "window": 4}))
    cfg = fit_cmd.config_from_args(_args("--config", str(cfg_file), "--window", "6"))
    assert (cfg.coarse_steps, cfg.w_normal, cfg.window) == (50, 0.7, 6)  # the option wins over the file
    assert cfg.lr_detail == FitConfig().lr_detail                         # the rest keep their defaults
    assert fit_cmd.config_from_args(_args("--no-offsets")).offsets is False


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"coarse_step": 5}))
    with pytest.raises(HeadrepError, match="unknown FitConfig key.*coarse_step"):
        FitConfig.from_file(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(HeadrepError, match="JSON object"):
        FitConfig.from_file(bad)
    with pytest.raises(HeadrepError, match="cannot read config"):
        FitConfig.from_file(tmp_path / "missing.json")
