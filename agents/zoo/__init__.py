"""Hyperparameter files for RL Baselines3 Zoo (``rl_zoo3``), one module per algorithm.

    python -m rl_zoo3.train --algo ppo --env text_env/Vowels-v0 --gym-packages text_env --conf-file agents.zoo.ppo

They are Python, not YAML, because the zoo passes the entries to the algorithm as they are and a YAML file cannot
hold the LM policy class, the episode buffer class, a model config or a KL callback. Each module's ``hyperparams``
maps env ids to the zoo's usual keys (``n_timesteps``, ``n_envs``, ``policy``, ``policy_kwargs``, ``callback``)
plus the algorithm's constructor arguments.
"""
