"""NLPO, Natural Language Policy Optimization (Ramamurthy et al. 2023, RL4LMs, https://arxiv.org/abs/2210.01241):
MaskablePPO whose action mask at each step is the top-p set (p = 0.9) of a frozen copy of the policy, the copy
refreshed from the policy every ``mask_update_interval`` rollouts (RL4LMs' ``target_update_iterations``).

The mask keeps PPO's exploration on tokens a recent policy finds plausible instead of the whole vocabulary. It
reaches sb3-contrib's MaskablePPO through its public interface: MaskablePPO asks the vector env for
``action_masks`` (``get_action_masks``), and :class:`TopPMaskVecEnv` answers with the task's own masks AND the mask
model's top-p set; MaskablePPO stores them in its buffer and its update uses them as for any masked env.

    from agents.registry import make_algorithm
    model = make_algorithm("nlpo", env, policy_kwargs=dict(model=...), top_p=0.9, mask_update_interval=20)

Evaluation and generation use the policy alone (the masks shape training, not the model that is deployed).
The mask model costs one more cached decode step per token in rollouts and a second copy of the LM in memory; with
LoRA only the adapter weights differ from the policy, and only they are saved in checkpoints.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sb3_contrib import MaskablePPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import GymEnv
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from agents.common.kv_cache import RowKVCache
from agents.common.models import trunk_and_head
from agents.common.policy import CausalLMPolicyBase, head_logits, head_weight_cast, scale_logits, trunk_precision
from agents.common.sequences import observation_tokens

ACTION_MASKS = "action_masks"  # the method sb3-contrib's get_action_masks calls


def top_p_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus of each row: the smallest set of most likely tokens whose probability reaches ``top_p``
    (Holtzman et al. 2020), as a ``(B, V)`` boolean mask; the most likely token is always in it."""
    probs = logits.float().softmax(-1)  # (B, V)
    sorted_probs, order = probs.sort(-1, descending=True)  # (B, V) each
    mass_before = sorted_probs.cumsum(-1) - sorted_probs  # (B, V): probability of the tokens ranked above
    keep_sorted = mass_before < top_p  # (B, V)
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # (B, V) back in token order


class TopPMaskModel:
    """A frozen copy of an LM policy's language model that gives top-p action masks, through its own KV cache.

    ``state_dict`` holds only the weights the policy trains (all of them with full fine-tuning, the adapters with
    LoRA): the rest never differs from the policy's, so checkpoints do not store the LM twice.
    """

    def __init__(self, policy: CausalLMPolicyBase, top_p: float) -> None:
        self.top_p = top_p
        self.temperature = policy.temperature
        self.compute_dtype = policy.compute_dtype
        self.observation_length = policy.observation_length
        self.lm = copy.deepcopy(policy.lm).requires_grad_(False).eval()
        self.trunk, self.head = trunk_and_head(self.lm)
        self.trained = [name for name, p in policy.lm.named_parameters() if p.requires_grad]
        self.cache = RowKVCache()
        self.head_dtype = policy.head_dtype
        self.head_weight = head_weight_cast(self.head, self.head_dtype)

    @torch.no_grad()
    def refresh(self, policy: CausalLMPolicyBase) -> None:
        """Copy the policy's trained weights into the mask model (its cached keys and values go stale)."""
        source, target = dict(policy.lm.named_parameters()), dict(self.lm.named_parameters())
        for name in self.trained:
            target[name].copy_(source[name])
        self.cache.clear()
        self.head_weight = head_weight_cast(self.head, self.head_dtype)

    @torch.no_grad()
    def masks(self, obs: Any) -> torch.Tensor:
        """The top-p sets ``(B, V)`` of the mask model's next-token distribution at these observations."""
        ids, mask = observation_tokens(obs, self.observation_length)
        device = next(self.lm.parameters()).device
        with trunk_precision(self.compute_dtype, device):
            hidden = self.cache.step(self.trunk, ids, mask)  # (B, H)
        logits = head_logits(self.head, hidden, self.head_dtype, self.head_weight)  # (B, V)
        logits = scale_logits(logits, self.temperature)  # as the policy's
        return top_p_mask(logits, self.top_p)  # (B, V)

    def state_dict(self) -> dict[str, torch.Tensor]:
        parameters = dict(self.lm.named_parameters())
        return {name: parameters[name].detach().clone() for name in self.trained}

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        missing, unexpected = set(self.trained) - set(state), set(state) - set(self.trained)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"The NLPO mask model's checkpoint does not match the policy's trained weights: missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]} (saved with another LoRA setting?)."
            )
        parameters = dict(self.lm.named_parameters())
        with torch.no_grad():
            for name in set(state) & set(self.trained):
                parameters[name].copy_(state[name])
        self.cache.clear()
        self.head_weight = head_weight_cast(self.head, self.head_dtype)


class TopPMaskVecEnv(VecEnvWrapper):
    """A vector env whose ``action_masks`` are the wrapped env's own masks AND the mask model's top-p set at the
    observations the agent acts on next (``observations()``: NLPO's ``_last_obs``, also when a checkpoint restored
    them): what MaskablePPO samples within and stores. A row whose two masks share no token keeps the env's own.

    ``allowed_tokens`` holds the size of each mask given since it was last cleared; with a ``logger``, their mean is
    recorded as ``rollout/top_p_tokens``.
    """

    def __init__(
        self, venv: VecEnv, mask_model: TopPMaskModel, observations: Callable[[], Any], device: torch.device
    ) -> None:
        super().__init__(venv)
        self.mask_model = mask_model
        self.observations = observations
        self.device = device
        self.allowed_tokens: list[int] = []
        self.logger: Logger | None = None

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        return self.venv.step_wait()

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        if method_name != ACTION_MASKS:
            return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)
        obs = self.observations()
        if obs is None:
            raise RuntimeError("TopPMaskVecEnv: no observations to mask yet (reset the env through the algorithm).")
        own = np.stack(self.venv.env_method(ACTION_MASKS, indices=indices)).astype(bool)  # (n, V)
        rows = list(self._get_indices(indices))
        top_p = self.mask_model.masks(obs_as_tensor(obs, self.device)).cpu().numpy()[rows]  # (n, V)
        if top_p.shape != own.shape:
            raise ValueError(
                f"The mask model scores {top_p.shape[1]} tokens but the env's action space has {own.shape[1]}: "
                "build the env with the policy's vocabulary size (vocab_size=)."
            )
        both = own & top_p  # (n, V)
        empty = ~both.any(-1)  # (n,)
        both[empty] = own[empty]
        self.allowed_tokens.extend(both.sum(-1).tolist())
        if self.logger is not None:
            self.logger.record("rollout/top_p_tokens", float(np.mean(self.allowed_tokens)))
        return list(both)


class NLPO(MaskablePPO):
    """MaskablePPO within the top-p set of a periodically refreshed copy of the policy (RL4LMs' NLPO).

    :param top_p: the nucleus mass of the mask (RL4LMs: 0.9).
    :param mask_update_interval: rollouts between refreshes of the mask model from the policy (RL4LMs'
        ``target_update_iterations``: 20); 1 makes the mask the current policy's own nucleus.
    The other arguments are MaskablePPO's.
    """

    def __init__(self, *args: Any, top_p: float = 0.9, mask_update_interval: int = 20, **kwargs: Any) -> None:
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        if mask_update_interval < 1:
            raise ValueError(f"mask_update_interval must be >= 1 rollout, got {mask_update_interval}.")
        self.top_p, self.mask_update_interval = top_p, mask_update_interval
        self.mask_model: TopPMaskModel | None = None
        self.rollouts_done = 0  # saved with the model: the refresh schedule survives a resume and any world size
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        if not isinstance(self.policy, CausalLMPolicyBase):
            raise TypeError(f"NLPO needs an LM policy (MaskableCausalLMPolicy), got {type(self.policy).__name__}.")
        self.mask_model = TopPMaskModel(self.policy, self.top_p)
        self.env = self._with_mask(self.env)

    def _with_mask(self, env: VecEnv | None) -> VecEnv | None:
        if env is None or isinstance(env, TopPMaskVecEnv):
            return env
        assert self.mask_model is not None
        return TopPMaskVecEnv(env, self.mask_model, lambda: self._last_obs, self.device)

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        super().set_env(env, force_reset)
        self.env = self._with_mask(self.env)

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback, *args: Any, **kwargs: Any) -> bool:
        """Refresh the mask model every ``mask_update_interval`` rollouts (this rank's rollouts, counted in
        ``rollouts_done``, which checkpoints keep), then MaskablePPO's rollout; logs the mean size of the top-p
        sets."""
        assert self.mask_model is not None
        if self.rollouts_done % self.mask_update_interval == 0:
            self.mask_model.refresh(self.policy)  # type: ignore[arg-type]
        if isinstance(env, TopPMaskVecEnv):
            env.allowed_tokens.clear()
            env.logger = self.logger
        completed = super().collect_rollouts(env, callback, *args, **kwargs)
        self.rollouts_done += 1  # after it: a checkpoint saved as it starts holds the rollouts before it
        return completed

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "mask_model"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, variables = super()._get_torch_save_params()
        return [*state_dicts, "mask_model"], variables
