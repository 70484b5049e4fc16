"""python -m agents.generate: completions of prompts from arguments or a file, with the sampling options."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_gpt2_config
from transformers import AutoModelForCausalLM

from agents.cli.generate import main


@pytest.fixture
def model_dir(tmp_path):
    directory = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(directory)
    return directory


def test_prompts_from_arguments_and_a_file_each_get_their_samples(model_dir, tmp_path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("From a file\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    argv = [str(model_dir), "The movie", "A", "--prompts-file", str(prompts_file), "--tokenizer", "char"]
    assert main([*argv, "--samples", "3", "--max-new-tokens", "5", "--top-k", "20", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["prompt"], r["sample"]) for r in rows] == [
        (p, s) for p in ("The movie", "A", "From a file") for s in range(3)
    ]
    assert all(0 < len(r["completion"]) <= 5 for r in rows)  # char tokenizer: one character a token


def test_greedy_decoding_is_the_same_whatever_the_seed_and_batching(model_dir, tmp_path):
    outputs = []
    for seed, batch_size in ((0, 1), (1, 4)):
        out = tmp_path / f"greedy{seed}.jsonl"
        argv = [str(model_dir), "The movie", "Plot:", "--tokenizer", "char", "--greedy", "--max-new-tokens", "6"]
        main([*argv, "--seed", str(seed), "--batch-size", str(batch_size), "--out", str(out)])
        outputs.append([json.loads(line)["completion"] for line in out.read_text().splitlines()])
    assert outputs[0] == outputs[1]  # left padding does not change a prompt's greedy completion


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "no prompts"),
        (["x", "--temperature", "0"], "for greedy decoding use --greedy"),
        (["x", "--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["x", "--top-k", "-1"], "--top-k must be >= 0"),
        (["x", "--prompts-file", "missing.txt"], "is not a file"),
    ],
)
def test_bad_options_exit_with_code_2_before_loading_weights(model_dir, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(model_dir), *extra, "--tokenizer", "char"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unknown_model_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), "x"])
    assert "neither 'smollm2-135m-instruct' nor a local directory" in capsys.readouterr().err
