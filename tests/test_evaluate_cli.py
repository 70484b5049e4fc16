"""python -m agents.evaluate: metrics of a saved model on a task's held-out prompts, written as JSON."""

from __future__ import annotations

import json

import pytest
import torch
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


def test_a_model_without_smollm2s_vocabulary_is_evaluated_without_kl_by_default(tmp_path, capsys):
    """The default reference (auto) of a model that is neither a run export nor SmolLM2-shaped is none: the
    metrics leave the KL out, and one line says why (it was SmolLM2, whose 49,152 logits crashed the KL)."""
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    out = tmp_path / "eval.json"
    assert main([str(model_dir), "--env-id", "text_env/Vowels-v0", "--samples", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["reference"] is None
    assert {"score", "distinct_2", "length"} <= set(report["metrics"])
    assert not {"kl", "ref_log_likelihood"} & set(report["metrics"])
    printed = capsys.readouterr().out
    assert "no KL reference" in printed and "(100) is not smollm2-135m-instruct's (49152)" in printed
    assert "--reference DIR" in printed


def test_the_default_reference_of_a_run_export_is_the_runs_base_model(tmp_path, capsys):
    torch.manual_seed(0)
    base_dir = tmp_path / "base"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(base_dir)
    run_dir = tmp_path / "runs" / "vowels"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(run_dir / "model")  # other weights
    (run_dir / "config.yaml").write_text(f"name: vowels\nmodel: {base_dir}\nenv_id: text_env/Vowels-v0\n")
    out = tmp_path / "eval.json"
    argv = [str(run_dir / "model"), "--env-id", "text_env/Vowels-v0", "--samples", "2", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["reference"] == str(base_dir)
    assert report["metrics"]["kl"] > 0 and report["metrics"]["ref_log_likelihood"] < 0
    assert "the run's base model" in capsys.readouterr().out


@pytest.mark.parametrize("reference", ["smollm2-135m-instruct", "other-vocab"])
def test_a_reference_with_another_vocabulary_is_refused_in_one_line(tmp_path, capsys, monkeypatch, reference):
    model_dir = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(model_dir)
    if reference == "other-vocab":
        reference = str(tmp_path / reference)
        AutoModelForCausalLM.from_config(tiny_gpt2_config(vocab_size=120)).save_pretrained(reference)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights loaded before the vocabulary check")

    for module in ("agents.common.policy", "agents.common.reference"):
        monkeypatch.setattr(f"{module}.load_causal_lm", no_weights)
    with pytest.raises(SystemExit) as exit_info:
        main([str(model_dir), "--env-id", "text_env/Vowels-v0", "--reference", reference])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    vocab = 49152 if reference == "smollm2-135m-instruct" else 120
    assert f"--reference {reference!r} has a vocabulary of {vocab} tokens and the model" in error
    assert "one of 100: the KL needs the same vocabulary" in error


def test_bad_options_exit_with_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "neither 'smollm2-135m-instruct' nor a local directory" in capsys.readouterr().err
