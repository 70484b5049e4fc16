"""python -m agents.evaluate: metrics of a saved model on a task's held-out prompts, written as JSON."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_gpt2_config
from transformers import AutoModelForCausalLM

from agents.cli.evaluate import main


def test_evaluating_a_saved_model_against_itself_gives_zero_kl(tmp_path, capsys):
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    out = tmp_path / "eval.json"
    argv = [str(model_dir), "--env-id", "text_env/Vowels-v0", "--reference", str(model_dir), "--samples", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert {"score", "kl", "distinct_2", "repetition", "ref_log_likelihood", "length"} <= set(metrics)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-5) and metrics["ref_log_likelihood"] < 0
    assert report["prompts"] == 1 and len(report["samples"]) == 2  # Vowels' 8 prompts: 1 set aside
    assert "evaluating on its last 1 of 8 prompts" in capsys.readouterr().out


def test_bad_options_exit_with_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "neither 'smollm2-135m-instruct' nor a local directory" in capsys.readouterr().err
