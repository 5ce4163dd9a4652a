"""The comparison report: random-normalised returns, latency measured on one thread."""

from __future__ import annotations

import math

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_distill import distill
from sb3_distill.evaluation import compare, format_comparison, normalized_return


def test_normalized_return_orders_negative_returns_rightly():
    # A worse student on a negative-return task: raw student / teacher would be 1.034.
    assert normalized_return(-79.45, -76.85, -200.0) < 1
    assert normalized_return(-76.85, -76.85, -200.0) == 1
    assert normalized_return(-200.0, -76.85, -200.0) == 0
    assert math.isnan(normalized_return(1.0, 5.0, 5.0))


def test_compare_reports_random_baseline_and_one_thread_latency():
    teacher = PPO("MlpPolicy", "CartPole-v1", seed=0)
    student = distill(teacher, "MlpPolicy", "CartPole-v1", 256, student_kwargs={"net_arch": [8]}, seed=0)
    threads = th.get_num_threads()
    results = compare(teacher, student, make_vec_env("CartPole-v1"), n_eval_episodes=3, agreement_steps=50)
    assert th.get_num_threads() == threads
    assert results["latency_threads"] == 1
    expected = normalized_return(results["student_mean"], results["teacher_mean"], results["random_mean"])
    assert results["ratio"] == expected or (math.isnan(results["ratio"]) and math.isnan(expected))
    assert len(results["random_returns"]) == 3
    assert "1 torch thread" in format_comparison(results)
