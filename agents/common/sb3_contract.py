"""Everything this package relies on in Stable-Baselines3 and sb3-contrib beyond their documented API, in one place.

SB3's extension points (policy classes, ``policy_kwargs``, ``rollout_buffer_class``, callbacks, ``OnPolicyAlgorithm``
subclasses) are public, but some of what the package does depends on *how* SB3 calls them. Each dependency below
names the SB3 code it relies on (stable-baselines3 / sb3-contrib 2.9.2, the versions tested) and the test in
``tests/test_sb3_contract.py`` that fails loudly if a release changes it. ``pyproject.toml`` pins both packages
below their next major version.

1. **Advantages before ``on_rollout_end``.** ``OnPolicyAlgorithm.collect_rollouts`` (and ``MaskablePPO``'s) call
   ``rollout_buffer.compute_returns_and_advantage(last_values, dones)`` and then ``callback.on_rollout_end()``
   (``on_policy_algorithm.py``, the last lines of ``collect_rollouts``). :class:`~agents.KLPenaltyCallback` shapes
   ``buffer.rewards`` in ``on_rollout_end`` and recomputes the advantages with the buffer's own method, so the
   update sees the shaped ones. [test: call order]
2. **The buffer is still ``(n_steps, n_envs)`` at ``on_rollout_end``.** Arrays are flattened env-major only on the
   first ``get()`` (``buffers.py``, ``DictRolloutBuffer.get``: ``if not self.generator_ready: ... swap_and_flatten``),
   which ``PPO.train`` calls after the callback. The KL callback indexes ``rewards``, ``log_probs``, ``actions`` and
   ``observations`` as ``(S, E, ...)``. [test: shapes at on_rollout_end]
3. **Which arrays ``get()`` flattens.** :class:`~agents.EpisodeRolloutBuffer` yields its own minibatches of whole
   episodes through ``_get_samples(indices)`` (``DictRolloutBuffer._get_samples``, indices into the flattened
   arrays) and flattens first, explicitly, the arrays SB3's ``get()`` would: :data:`FLATTENED` (plus
   ``action_masks`` for the maskable buffer, :data:`FLATTENED_MASKABLE`). ``episode_starts`` and ``rewards`` are not
   flattened by SB3, and the episode order is read from ``episode_starts``. [test: flattened arrays]
4. **Skipping a level of the buffer MRO.** :class:`~agents.MaskableEpisodeRolloutBuffer.reset` allocates its masks
   as ``bool`` and calls ``DictRolloutBuffer.reset`` directly, skipping ``MaskableDictRolloutBuffer.reset``, which
   only allocates float32 masks (sb3-contrib ``common/maskable/buffers.py``). [test: masks are bool]
5. **Locals of ``collect_rollouts``.** The KL callback reads ``self.locals["dones"]``, ``["infos"]`` and
   ``["new_obs"]``, which ``collect_rollouts`` passes through ``callback.update_locals(locals())``. [test: locals]
6. **State in ``model.save``.** :func:`~agents.common.checkpoint.save_checkpoint` sets a temporary model attribute and
   passes ``include=["resume_state"]`` to ``BaseAlgorithm.save``, which pickles included attributes with the model
   (``base_class.py``, ``save``: ``data = self.__dict__.copy()`` ... ``include``).
7. **TRPO's double backward.** sb3-contrib's ``TRPO.train`` is the only caller of ``policy.get_distribution`` with
   gradients on (its Hessian-vector products); the policy runs attention on the math kernel there
   (:func:`~agents.common.policy.double_backward_attention`).
8. **GRPO's hooks.** :class:`~agents.GRPO` overrides ``collect_rollouts`` and ``train`` (called by
   ``OnPolicyAlgorithm.learn`` in that order), builds its buffer through ``rollout_buffer_class`` with the
   constructor arguments ``OnPolicyAlgorithm._setup_model`` passes, saves its reference with
   ``_get_torch_save_params`` / ``_excluded_save_params``, and chooses prompts with ``VecEnv.set_options``, which
   applies at the next ``reset()`` only (``base_vec_env.py``, ``set_options``).
9. **Per-rank state of an algorithm.** A data-parallel checkpoint stores each rank's
   :data:`~agents.common.checkpoint.RANK_ATTRIBUTES`: ``_last_obs`` and ``_last_episode_starts`` (what
   ``collect_rollouts`` steps from; ``_setup_learn`` keeps them when ``reset_num_timesteps=False`` and ``_last_obs``
   is set), ``ep_info_buffer`` and ``ep_success_buffer`` (kept likewise). ``BaseAlgorithm.load`` applies its keyword
   arguments over the saved attributes before ``_setup_model`` (``model.__dict__.update(kwargs)``), which is how a
   resume with another world size sets the per-rank ``batch_size``; ``set_random_seed`` seeds the envs through
   ``VecEnv.seed``, applied at their next ``reset()``. An algorithm's own per-rank state (GRPO's pass over the
   prompts) is not an SB3 attribute: it goes through the public
   :class:`~agents.common.checkpoint.RankStateHook` (``get_rank_state`` / ``set_rank_state``), which this package
   defines. [test: test_distributed, resume under torchrun]
"""

from __future__ import annotations

#: The rollout-buffer arrays that SB3's ``DictRolloutBuffer.get`` flattens on its first call (buffers.py,
#: ``_tensor_names``), besides each observation array.
FLATTENED = ("actions", "values", "log_probs", "advantages", "returns")
#: The same for sb3-contrib's ``MaskableDictRolloutBuffer.get``.
FLATTENED_MASKABLE = (*FLATTENED, "action_masks")
#: The versions the contract was last checked against.
TESTED_VERSIONS = {"stable-baselines3": "2.9.2", "sb3-contrib": "2.9.2"}
