"""The algorithm comparison's real-task mode: the best-of-n estimator and KL bound, the statistics and plots, the
held-out checkpoints, one end-to-end comparison through the main job's code path on a tiny model, and bad flags."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2_config
from transformers import AutoModelForCausalLM

from agents.cli import compare, compare_report
from agents.common.best_of_n import (
    best_of_n_curve,
    expected_best_of_n,
    kl_bound,
    n_values,
    optimum_at_kl,
    optimum_gap,
    tilted_optimum,
    tilted_optimum_curve,
)
from agents.registry import ALGORITHMS


# ---------------------------------------------------------------------------- best-of-n
@pytest.mark.parametrize("ties", [False, True])
def test_expected_best_of_n_is_the_mean_max_over_all_n_subsets(ties):
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=9).astype(float) if ties else rng.normal(size=9)
    for n in range(1, len(scores) + 1):
        brute = np.mean([max(subset) for subset in itertools.combinations(scores, n)])
        assert expected_best_of_n(scores, n) == pytest.approx(brute, rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="n must be in"):
        expected_best_of_n(scores, len(scores) + 1)


def test_best_of_n_curve_averages_prompts_over_powers_of_two():
    scores = np.random.default_rng(2).uniform(-1, 1, size=(5, 6))  # (prompts, samples)
    curve = best_of_n_curve(scores)
    assert [p["n"] for p in curve] == n_values(6) == [1, 2, 4, 6]
    assert curve[0]["score"] == pytest.approx(scores.mean())  # best-of-1 is the plain sample mean
    for point in curve:
        assert point["score"] == pytest.approx(np.mean([expected_best_of_n(row, point["n"]) for row in scores]))
    assert all(a["score"] <= b["score"] for a, b in itertools.pairwise(curve))


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_kl_bound_is_the_exact_kl_of_best_of_n_over_many_distinct_outcomes(n):
    """Best-of-n over M equally likely outcomes with distinct scores picks the i-th lowest with probability
    (i/M)^n - ((i-1)/M)^n; its KL to the uniform base tends to log n - (n-1)/n as M grows."""
    m = 100_000
    ranks = np.arange(1, m + 1) / m
    p = ranks**n - (ranks - 1 / m) ** n
    exact = float(np.sum(p[p > 0] * np.log(p[p > 0] * m)))
    assert kl_bound(n) == pytest.approx(exact, abs=1e-3)
    assert kl_bound(n) <= math.log(n)


# ---------------------------------------------------------------------------- the KL-regularised optimum
REFERENCE_PROBS = np.array([0.5, 0.25, 0.125, 0.125])  # a categorical pi_ref over four completions
REFERENCE_REWARDS = np.array([0.0, 1.0, 0.5, -1.0])


def closed_form_optimum(beta):
    """pi*(k) = p_k exp(r_k / beta) / Z: its expected reward and KL(pi* || p), exactly."""
    tilted = REFERENCE_PROBS * np.exp(REFERENCE_REWARDS / beta)
    tilted /= tilted.sum()
    return float(tilted @ REFERENCE_REWARDS), float(np.sum(tilted * np.log(tilted / REFERENCE_PROBS)))


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0, 5.0])
def test_tilted_optimum_is_exact_on_samples_in_the_reference_proportions(beta):
    """Samples whose frequencies are the reference's probabilities make the self-normalised estimate exact."""
    samples = np.repeat(REFERENCE_REWARDS, (REFERENCE_PROBS * 800).astype(int))[None, :]  # (1, 800)
    reward, kl = tilted_optimum(samples, beta)
    assert (reward, kl) == pytest.approx(closed_form_optimum(beta), rel=1e-9, abs=1e-12)


def test_tilted_optimum_converges_on_random_samples_and_averages_prompts():
    rng = np.random.default_rng(0)
    samples = rng.choice(REFERENCE_REWARDS, p=REFERENCE_PROBS, size=(8, 4000))  # 8 prompts of the same reference
    reward, kl = tilted_optimum(samples, 0.3)
    exact_reward, exact_kl = closed_form_optimum(0.3)
    assert reward == pytest.approx(exact_reward, abs=0.02) and kl == pytest.approx(exact_kl, abs=0.02)
    per_prompt = [tilted_optimum(row[None, :], 0.3) for row in samples]
    assert reward == pytest.approx(np.mean([r for r, _ in per_prompt]))


def test_optimum_curve_spans_base_to_best_sample_and_is_bounded_by_log_n():
    rng = np.random.default_rng(1)
    spaced = np.tile(np.linspace(-1, 1, 16), (6, 1))  # distinct scores, 0.13 apart: beta = 1e-3 picks the best
    scores = rng.permuted(spaced, axis=1) + rng.uniform(0, 1, size=(6, 1))  # (6, 16), a different mean per prompt
    curve = tilted_optimum_curve(scores)
    kls = [p["kl"] for p in curve]
    assert kls == sorted(kls) and all(0 <= kl <= math.log(16) + 1e-9 for kl in kls)
    assert curve[0]["score"] == pytest.approx(scores.mean(), abs=0.01)  # beta >> spread: ~ the base (+ var / beta)
    assert curve[-1]["score"] == pytest.approx(scores.max(1).mean(), abs=1e-6)  # beta -> 0: the best sample
    assert curve[-1]["kl"] == pytest.approx(math.log(16), abs=1e-6)
    assert [p["score"] for p in curve] == sorted(p["score"] for p in curve)  # more KL buys more reward
    # On the samples' own distribution (16 equally likely outcomes per prompt) the tilted policy beats every other
    # policy at its KL, best-of-n drawn with replacement included: its i-th lowest sample is kept with probability
    # (i/16)^n - ((i-1)/16)^n.
    dense = tilted_optimum_curve(scores, np.geomspace(1e-3, 1e2, 400))  # linear interpolation of a concave curve
    ranks = np.arange(1, 17) / 16
    for n in (2, 4, 8):
        p = ranks**n - (ranks - 1 / 16) ** n  # (16,)
        kl, score = float(np.sum(p * np.log(p * 16))), float(np.mean(np.sort(scores, 1) @ p))
        assert optimum_at_kl(dense, kl) >= score
    with pytest.raises(ValueError, match="beta must be > 0"):
        tilted_optimum(scores, 0.0)


def test_gap_to_the_optimum_at_the_runs_kl_and_a_lower_bound_beyond_log_n():
    curve = tilted_optimum_curve(np.random.default_rng(2).uniform(0, 1, size=(4, 8)))
    middle = curve[len(curve) // 2]
    gap, lower_bound = optimum_gap(curve, middle["kl"], middle["score"] - 0.1)
    assert gap == pytest.approx(0.1) and not lower_bound
    assert optimum_at_kl(curve, 10.0) is None
    gap, lower_bound = optimum_gap(curve, 10.0, 0.5)
    assert lower_bound and gap == pytest.approx(curve[-1]["score"] - 0.5)


# ---------------------------------------------------------------------------- statistics, table, plots
def synthetic_results(scores_by_algorithm):
    """Results shaped like run_task's, with checkpoints at different token counts per seed."""
    results = []
    for algorithm, finals in scores_by_algorithm.items():
        for seed, final in enumerate(finals):
            steps = [0, 1536 + 64 * seed, 3072]
            history = [
                {"timesteps": float(t), "score": 0.1 + (final - 0.1) * t / 3072, "kl": 4.0 * t / 3072,
                 "distinct_2": 0.9, "repetition": 0.01}
                for t in steps
            ]  # fmt: skip
            results.append(
                {"algorithm": algorithm, "seed": seed, "history": history, "tokens": 3072,
                 "seconds_per_1k_tokens": 20.0 + seed, "eval_seconds": 30.0, "peak_rss_mib": 2000.0 + seed}
            )  # fmt: skip
    return results


def test_bootstrap_ci_contains_the_mean_and_is_none_without_spread():
    values = [0.52, 0.61, 0.58, 0.70]
    low, high = compare_report.bootstrap_ci(values)
    assert low < np.mean(values) < high
    assert min(values) <= low and high <= max(values)  # a percentile interval of the mean stays within the data
    assert compare_report.bootstrap_ci([0.5]) is None
    assert compare_report.bootstrap_ci([0.4, 0.4, 0.4]) is None


def test_table_per_algorithm_with_ci_or_na(tmp_path):
    results = synthetic_results({"ppo": [0.5, 0.6, 0.7], "grpo": [0.8]})
    rows = compare_report.summary_rows(results, ["ppo", "grpo", "rloo"])
    assert [r["algorithm"] for r in rows] == ["ppo", "grpo"]  # rloo has no runs
    ppo, grpo = rows
    assert ppo["seeds"] == 3 and ppo["score_mean"] == pytest.approx(0.6)
    assert ppo["score_ci_low"] < ppo["score_mean"] < ppo["score_ci_high"]
    assert ppo["kl_mean"] == pytest.approx(4.0) and ppo["peak_rss_mib"] == 2002.0
    assert ppo["seconds_per_1k_tokens"] == pytest.approx(21.0)
    assert grpo["score_ci_low"] is None
    assert ppo["optimum_gap_mean"] is None  # no optimum curve given
    optimum = [{"kl": 0.0, "score": 0.1, "beta": 9.0}, {"kl": 8.0, "score": 0.9, "beta": 0.1}]
    with_gap = compare_report.summary_rows(results, ["ppo"], optimum)[0]
    assert with_gap["optimum_gap_mean"] == pytest.approx(0.5 - 0.6) and not with_gap["optimum_gap_lower_bound"]
    table = compare_report.format_table(rows).splitlines()
    assert "0.600 (n/a)" not in table[2] and "0.600 (" in table[2]
    assert "0.800 (n/a)" in table[3]
    compare_report.write_csvs(tmp_path, rows, results)
    with open(tmp_path / "comparison.csv", encoding="utf-8") as handle:
        assert [r["algorithm"] for r in csv.DictReader(handle)] == ["ppo", "grpo"]
    with open(tmp_path / "checkpoints.csv", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 4 * 3


def test_plots_are_written(tmp_path):
    results = synthetic_results({"ppo": [0.5, 0.6, 0.7], "rloo": [0.8, 0.9]})
    curve = best_of_n_curve(np.random.default_rng(0).uniform(-1, 1, size=(4, 16)))
    compare_report.plot_score_vs_tokens(results, ["ppo", "rloo"], tmp_path / "score.png", "t")
    compare_report.plot_frontier(results, ["ppo", "rloo"], curve, tmp_path / "frontier.png", "t")
    compare_report.plot_frontier(results, ["ppo"], None, tmp_path / "no_bon.png", "t")
    optimum = tilted_optimum_curve(np.random.default_rng(0).uniform(-1, 1, size=(4, 16)))
    compare_report.plot_frontier(results, ["ppo"], curve, tmp_path / "sqrt.png", "t", optimum, sqrt_kl=True)
    for name in ("score.png", "frontier.png", "no_bon.png", "sqrt.png"):
        assert (tmp_path / name).stat().st_size > 5000


# ---------------------------------------------------------------------------- the real-task mode, end to end
@pytest.fixture
def tiny_model_dir(tmp_path):
    path = tmp_path / "tiny"
    AutoModelForCausalLM.from_config(tiny_gpt2_config()).save_pretrained(path)
    return path


SMALL_RUNS = "n_envs: 4\nn_steps: 16\nbatch_size: 32\nlora_r: 0\ngroup_size: 2\neval_batch_size: 8\n"


def test_checkpoints_evaluate_the_policy_trained_on_their_tokens(tmp_path, tiny_model_dir):
    """Each checkpoint sees the weights after the update on its last rollout, the last one included (the main
    job's TextEvalCallback evaluates at a rollout's end, before that update)."""
    from agents.cli.compare_task import TokenCheckpointEvaluation
    from agents.cli.config import TrainConfig
    from agents.cli.train import learn, setup

    config = TrainConfig.from_values(dict(
        env_id="text_env/Vowels-v0", model=str(tiny_model_dir), n_envs=4, n_steps=16, batch_size=32, lora_r=0,
        eval_batch_size=8, learning_rate=1e-2, total_timesteps=192, output_dir=str(tmp_path), name="t",
    ))  # fmt: skip
    run = setup(config)
    run.budget.progress_bar = False
    evaluation = run.evaluation = TokenCheckpointEvaluation(run.evaluation, every_tokens=128)
    weights = lambda: torch.cat([p.detach().flatten() for p in run.model.policy.parameters()]).clone()  # noqa: E731
    evaluated, updated = [], {0: weights()}
    evaluate, train = evaluation.evaluate, run.model.train

    def recording_evaluate():
        evaluated.append((evaluation.num_timesteps, weights()))
        return evaluate()

    def recording_train():
        train()
        updated[run.model.num_timesteps] = weights()

    evaluation.evaluate, run.model.train = recording_evaluate, recording_train
    learn(run)
    assert [t for t, _ in evaluated] == [0, 128, 192] == [row["timesteps"] for row in evaluation.history]
    assert list(updated) == [0, 64, 128, 192]
    assert not torch.equal(updated[64], updated[128])  # the updates change the weights
    for timesteps, seen in evaluated:
        assert torch.equal(seen, updated[timesteps]), timesteps
    assert evaluation.seconds > 0


def test_real_task_comparison_end_to_end(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "small.yaml").write_text(SMALL_RUNS)
    out = tmp_path / "cmp"
    argv = [
        "--env-id", "text_env/Vowels-v0", "--model", str(tiny_model_dir), "--config", str(tmp_path / "small.yaml"),
        "--algorithms", "ppo,rloo", "--seeds", "0", "--budget-tokens", "256", "--eval-every-tokens", "128",
        "--eval-samples", "4", "--best-of-n", "4", "--workers", "1", "--out", str(out),
    ]  # fmt: skip
    assert compare.main(argv) == 0
    console = capsys.readouterr().out
    assert "| ppo | 1 |" in console and "(n/a)" in console and "best-of-n from the base model: n=1" in console

    with open(out / "comparison.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["algorithm"], r["seeds"], r["tokens"]) for r in rows] == [("ppo", "1", "256"), ("rloo", "1", "256")]
    assert all(r["score_ci_low"] == "" and 0 <= float(r["score_mean"]) <= 1 for r in rows)
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["failed"] == [] and summary["budget_tokens"] == 256 and summary["rollout_tokens"] == 64
    for run in summary["runs"]:
        assert [row["timesteps"] for row in run["history"]] == [0, 128, 256], run["algorithm"]
        assert {"score", "kl", "distinct_2", "repetition"} <= set(run["history"][-1])
        assert run["history"][-1]["kl"] > run["history"][0]["kl"]  # trained away from the reference
        assert run["peak_rss_mib"] > 100 and run["seconds_per_1k_tokens"] > 0
        assert (out / "runs" / f"{run['algorithm']}-seed0" / "config.yaml").is_file()

    best_of_n = json.loads((out / "best_of_n.json").read_text())
    scores = np.array(best_of_n["scores"])  # (held-out prompts, 4): Vowels holds out 1 of its 8 prompts
    assert scores.shape == (len(best_of_n["prompts"]), 4)
    assert [p["n"] for p in best_of_n["curve"]] == [1, 2, 4]
    assert best_of_n["curve"][0]["score"] == pytest.approx(scores.mean())
    assert best_of_n["curve"][-1]["score"] == pytest.approx(np.mean(scores.max(1)))
    assert best_of_n["key"]["n_max"] == 4 and summary["best_of_n"]["curve"] == best_of_n["curve"]
    for name in ("score_vs_tokens.png", "frontier.png"):
        assert (out / name).stat().st_size > 5000


def test_the_tiny_mode_still_compares_on_vowels(tmp_path):
    out = tmp_path / "tiny"
    argv = ["--algorithms", "ppo", "rloo", "--seeds", "0", "--timesteps", "512", "--workers", "2", "--out", str(out)]
    assert compare.main(argv) == 0
    with open(out / "comparison.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["algorithm"], r["seed"]) for r in rows] == [("ppo", "0"), ("rloo", "0")]
    assert all(0 <= float(r["final_reward"]) <= 1 and float(r["peak_rss_mib"]) > 100 for r in rows)
    assert (out / "comparison.png").stat().st_size > 5000


def test_a_failing_or_dying_run_fails_alone(tmp_path, capsys):
    import os

    jobs = [
        compare.Job("raises", math.sqrt, (-1.0,), quiet=True),
        compare.Job("dies", os._exit, (3,), quiet=True),
        compare.Job("works", dict, (), quiet=True),
    ]
    results = compare.run_in_processes(jobs, 3, tmp_path)
    assert results == {"raises": None, "dies": None, "works": {}}
    assert "ValueError: math domain error" in (tmp_path / "raises.log").read_text()
    console = capsys.readouterr().out
    assert "raises FAILED (exit code 1)" in console and "dies FAILED (exit code 3)" in console


# ---------------------------------------------------------------------------- bad flags
@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model construction fails; the embedded SmolLM2 is converted first (its tokenizer is read from there)."""
    from transformers import AutoModelForCausalLM

    from text_env.embedded import embedded_checkpoint_dir

    embedded_checkpoint_dir()

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_model)
    monkeypatch.setattr(AutoModelForCausalLM, "from_config", no_model)


REAL = ["--env-id", "text_env/PositiveReview-v0"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--algorithms", "ppo", "sac"], "--algorithms: unknown ['sac']"),
        (["--algorithms", "ppo,ppo"], "--algorithms lists a value twice"),
        (["--seeds"], "expected at least one argument"),
        (["--seeds", "1", "1"], "--seeds lists a value twice"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--budget-tokens", "0"], "--budget-tokens must be >= 1"),
        (["--env-id", "text_env/Nope-v0"], "Unknown env_id"),
        (["--eval-every-tokens", "96"], "apply to the real-task mode only"),
        ([*REAL, "--budget-tokens", "1000"], "less than one rollout (32 envs x 48 steps = 1536 tokens)"),
        ([*REAL, "--budget-tokens", "3072", "--eval-every-tokens", "6144"], "more than the budget of 3072"),
        ([*REAL, "--algorithms", "grpo", "--n-envs", "6"], "needs group_size >= 2 dividing n_envs"),
        ([*REAL, "--compute-dtype", "float8"], "compute_dtype must be one of"),
        (["--model", "no/such/dir"], "neither 'smollm2-135m-instruct' nor a local directory"),
        ([*REAL, "--config", "no/such.yaml"], "No such file"),
    ],
)
def test_bad_flags_exit_2_with_one_line_before_any_model_loads(argv, message, capsys, no_model_loads, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        compare.main([*argv, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_budget_and_interval_are_rounded_to_whole_rollouts(capsys, no_model_loads, tmp_path):
    args = compare.build_parser().parse_args(
        [*REAL, "--budget-tokens", "5000", "--eval-every-tokens", "2000", "--seeds", "3", "--out", str(tmp_path)]
    )
    args.algorithms = ["ppo", "rloo"]
    base, configs, budget, every = compare.task_configs(args)
    assert (budget, every) == (4608, 1536)  # 3 rollouts of 1536 tokens; every rollout
    assert "using 4608 (3 rollouts)" in capsys.readouterr().out
    assert [(c.algorithm, c.run.seed, c.run.total_timesteps, c.task.eval_every) for c in configs] == [
        ("ppo", 3, 4608, 1), ("rloo", 3, 4608, 1)
    ]  # fmt: skip
    assert {c.task.eval_samples for c in configs} == {compare.TASK_EVAL_SAMPLES}
    assert base.task.n_envs * base.settings.n_steps == 1536


def test_the_benchmark_aggregates_with_rliable_and_resumes_without_rerunning_a_cell(tmp_path, tiny_model_dir, capsys):
    """Two algorithms x two seeds on the tiny task through the main job; a second call runs only the cell whose
    result was removed, and --report-only runs nothing."""
    pytest.importorskip("rliable", reason="the benchmark extra")
    from agents.cli import benchmark

    (tmp_path / "small.yaml").write_text(SMALL_RUNS)
    out = tmp_path / "bench"
    argv = [
        "--tasks", "text_env/Vowels-v0", "--model", str(tiny_model_dir), "--config", str(tmp_path / "small.yaml"),
        "--algorithms", "ppo", "rloo", "--seeds", "0", "1", "--budget-rollouts", "2", "--eval-every-rollouts", "1",
        "--eval-prompts", "2", "--workers", "1", "--out", str(out),
    ]  # fmt: skip
    assert benchmark.main(argv) == 0
    assert "5 jobs to run" in capsys.readouterr().out  # 4 cells and the best-of-16 reference
    summary = json.loads((out / "aggregate.json").read_text())
    assert summary["missing_cells"] == 0 and set(summary["aggregate"]["algorithms"]) == {"ppo", "rloo"}
    for name in ("ppo", "rloo"):
        iqm = summary["aggregate"]["algorithms"][name]["iqm"]
        assert iqm["ci95"][0] <= iqm["value"] <= iqm["ci95"][1]
        task = summary["per_task"]["text_env/Vowels-v0"]
        curve = json.loads((out / "cells" / "Vowels-v0" / "best_of_n.json").read_text())["curve"]
        assert (task["base"], task["best_of_n"]) == (curve[0]["score"], curve[-1]["score"])  # n = 1 and n = 16
        cells = [task["cells"][f"{name}-seed{s}"] for s in (0, 1)]
        expected = [(c["after"] - task["base"]) / (task["best_of_n"] - task["base"]) for c in cells]
        np.testing.assert_allclose(np.array(summary["normalised_scores"][name])[:, 0], expected)
    assert "ppo,rloo" in summary["aggregate"]["probability_of_improvement"]
    for name in ("aggregate.png", "profiles.png", "cells/Vowels-v0/frontier.png"):
        assert (out / name).stat().st_size > 5000, name
    report = (out / "report.md").read_text()  # the tables a person reads: every aggregate, every cell's task
    for name in ("ppo", "rloo"):
        iqm = summary["aggregate"]["algorithms"][name]["iqm"]
        assert f"| {name} | {iqm['value']:.2f} ({iqm['ci95'][0]:.2f} to {iqm['ci95'][1]:.2f}) |" in report
        final = np.mean(
            [summary["per_task"]["text_env/Vowels-v0"]["cells"][f"{name}-seed{s}"]["after"] for s in (0, 1)]
        )
        assert f"| {name} | 2 | {final:.3f} (" in report
    assert "## text_env/Vowels-v0" in report and "4 cells and 1 best-of-16 references" in report

    (out / "cells" / "Vowels-v0" / "rloo-seed1.json").unlink()  # stored late: the worker's own copy brings it back
    assert benchmark.main(argv) == 0 and "0 jobs to run" in capsys.readouterr().out
    (out / "cells" / "Vowels-v0" / "rloo-seed1.json").unlink()  # now gone for good: run again, alone
    assert not (out / "logs" / "Vowels-v0-rloo-seed1.json").exists()  # (the recovery moved the worker's copy)
    assert benchmark.main(argv) == 0
    assert "1 jobs to run" in capsys.readouterr().out
    assert benchmark.main([*argv, "--report-only"]) == 0 and "jobs to run" not in capsys.readouterr().out


def test_majority_answer_accuracy_is_what_a_constant_answer_scores():
    """The benchmark's check for a task a constant answer solves (LetterCount-v0's held-out counts: 41% are 1)."""
    from agents.common.evaluation import majority_answer_accuracy
    from text_env import PromptRecord

    records = [PromptRecord("a", "1"), PromptRecord("b", "0"), PromptRecord("c", "1"), PromptRecord("d", ["x", "y"])]
    assert majority_answer_accuracy(records) == pytest.approx(0.5)
    assert majority_answer_accuracy([*records, PromptRecord("e")]) is None  # a prompt without a reference
    assert majority_answer_accuracy([]) is None


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_the_tiny_comparison_configures_every_algorithm(name):
    """`make compare` trains every entry without a KL term, but for one whose loss is its KL term (apo)."""
    config = compare.tiny_config(name, seed=0, env_id="text_env/Vowels-v0", n_envs=8)
    assert config.algorithm == name and config.task.n_envs == 8
    assert (config.kl.coef > 0) == (name == "apo")
