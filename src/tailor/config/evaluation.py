"""Settings of evaluation, generation-based validation and the base-vs-fine-tuned comparison."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tailor.config.base import check_range, setting
from tailor.errors import TailorError

#: Metrics computed from generated replies (need eval.val_generate_samples > 0 during training).
GENERATION_METRICS = (
    "bleu", "chrf", "rouge1", "rouge2", "rougeL", "unigram_f1", "distinct_1", "distinct_2",
    "response_tokens", "stop_rate", "repetition_rate",
)
#: Whether higher values are better, for every metric whose direction is known (used by eval.mode: auto).
HIGHER_IS_BETTER = {
    "loss": False, "perplexity": False, "token_accuracy": True, "accuracy": True, "macro_f1": True,
    "bleu": True, "chrf": True, "rouge1": True, "rouge2": True, "rougeL": True, "unigram_f1": True,
    "distinct_1": True, "distinct_2": True, "stop_rate": True, "repetition_rate": False,
}


@dataclass
class EvalConfig:
    metric: str = setting(
        "loss",
        help="Validation metric that picks the best checkpoint and drives early stopping: loss, perplexity, "
        "token_accuracy, or a generation metric (chrf, bleu, rouge1, rouge2, rougeL, unigram_f1, distinct_1, "
        "distinct_2, stop_rate, repetition_rate; these need eval.val_generate_samples > 0).",
    )
    mode: Literal["auto", "min", "max"] = setting(
        "auto",
        help="Whether lower ('min') or higher ('max') values of eval.metric are better; 'auto' knows it for "
        "the metrics listed under eval.metric.",
    )
    batch_size: int = setting(16, help="Samples per forward pass when scoring.")
    generate_samples: int = setting(32, help="Test prompts answered by generation for the generation metrics (chrF, BLEU, ROUGE, length, stop rate...).")
    val_generate_samples: int = setting(
        0,
        help="Validation prompts (a fixed sample, the same at every validation) answered by generation at each "
        "validation, every train.eval_every steps, so generation metrics are logged and can pick the best "
        "checkpoint (0 = off: validation is teacher-forced only).",
    )
    show_samples: int = setting(3, help="Test prompts whose replies are printed side by side.")
    bootstrap: int = setting(1000, help="Bootstrap resamples for confidence intervals of metric differences (0 = off).")
    confidence: float = setting(0.95, help="Confidence level of the bootstrap intervals.")

    def __post_init__(self) -> None:
        if self.mode == "auto":
            if self.metric not in HIGHER_IS_BETTER:
                raise TailorError(
                    f"mode: 'auto' does not know whether higher or lower values of metric '{self.metric}' are "
                    "better; set eval.mode to 'min' or 'max'."
                )
            self.mode = "max" if HIGHER_IS_BETTER[self.metric] else "min"
        if self.metric in GENERATION_METRICS and self.val_generate_samples < 1:
            raise TailorError(
                f"metric '{self.metric}' is computed from generated replies; set eval.val_generate_samples "
                "(e.g. 32) so each validation generates on a fixed sample of the validation split."
            )
        for name in ("batch_size",):
            if getattr(self, name) < 1:
                raise TailorError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("generate_samples", "val_generate_samples", "show_samples", "bootstrap"):
            if getattr(self, name) < 0:
                raise TailorError(f"{name} must be 0 or more, got {getattr(self, name)}.")
        check_range("batch_size", self.batch_size, 1, 10**6)
        for name in ("generate_samples", "val_generate_samples", "show_samples", "bootstrap"):
            check_range(name, getattr(self, name), 0, 10**9)
        if not 0 < self.confidence < 1:
            raise TailorError(f"confidence must be in (0, 1), got {self.confidence}.")
