"""Decoding settings, shared by evaluation, `tailor generate`, chat and serving.

One section covers the three strategies:
- greedy: do_sample false, num_beams 1 (the default);
- beam search: num_beams > 1, with length_penalty and early_stopping;
- sampling: do_sample true, with temperature, top_k and top_p (and num_beams > 1 for beam sampling).
The remaining settings (repetition penalty, no-repeat n-grams, banned words, stop strings, length
limits, seed) apply to all three. `tailor.generate.replies.generation_config` maps this section
onto a Hugging Face GenerationConfig.
"""

from __future__ import annotations

from dataclasses import dataclass

from tailor.config.base import check_range, setting
from tailor.errors import TailorError


@dataclass
class DecodeConfig:
    max_new_tokens: int = setting(64, help="Most tokens generated per reply.")
    min_new_tokens: int = setting(0, help="Fewest tokens generated per reply before an end-of-turn may end it (0 = off).")
    do_sample: bool = setting(False, help="Sample (true) or decode greedily / by beam search (false).")
    temperature: float = setting(0.7, help="Softmax temperature when sampling (ignored unless do_sample).")
    top_k: int = setting(50, help="Sample among the k most likely tokens (0 = off; ignored unless do_sample).")
    top_p: float = setting(0.9, help="Nucleus sampling mass in (0, 1] (1.0 = off; ignored unless do_sample).")
    num_beams: int = setting(1, help="Beam search width (1 = off).")
    length_penalty: float = setting(
        1.0, help="Beam search: exponent on the length that divides a beam's log-probability (>1 favours longer replies)."
    )
    early_stopping: bool = setting(
        False, help="Beam search: stop as soon as num_beams finished replies exist (true) or when no better one can appear."
    )
    repetition_penalty: float = setting(1.0, help="Penalty on tokens already present in prompt or reply (1.0 = off).")
    no_repeat_ngram_size: int = setting(0, help="Never repeat an n-gram of this many tokens (0 = off).")
    bad_words: list[str] = setting([], help="Words or phrases never generated (matched as tokens, with and without a leading space).")
    stop_strings: list[str] = setting([], help="Generation stops when one of these appears; the reply is cut before it.")
    lookahead: int = setting(
        4, help="Greedy, one prompt at a time, Llama-family: draft up to this many tokens per step from the text "
        "so far and check them in one forward (0 = off). The tokens are plain greedy's: on bf16 weights it drafts only "
        "where the decoding kernel rounds each drafted token as its own one-token step.")
    kernels: bool = setting(
        True, help="On CPUs with AVX512-BF16, bf16 decoding's products, norms, rotary embedding and greedy argmax "
        "run on tailor's C++ kernels (the same tokens as torch's ops; the products read the weights at memory speed); "
        "on CPUs with AVX-512 alone, bf16 weights decode in fp32 on them (widen.cpp). Built on first use with g++ and "
        "ninja. Off: torch's own ops and nothing is built, e.g. where no compiler is installed or to measure what "
        "the kernels bring.")
    seed: int = setting(0, help="Seed of the random generator before generating (makes sampling reproducible).")
    batch_size: int = setting(8, help="Prompts generated together.")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise TailorError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise TailorError(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}.")
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("max_new_tokens", self.max_new_tokens, 1, 10**6)
        check_range("temperature", self.temperature, 0, 100, low_open=True)
        check_range("top_k", self.top_k, 0, 10**7, note=" (0 = off)")
        check_range("num_beams", self.num_beams, 1, 1024)
        check_range("length_penalty", self.length_penalty, -100, 100)
        check_range("repetition_penalty", self.repetition_penalty, 0, 100, low_open=True, note=" (1.0 = off)")
        check_range("no_repeat_ngram_size", self.no_repeat_ngram_size, 0, 10**6, note=" (0 = off)")
        check_range("lookahead", self.lookahead, 0, 1024, note=" (0 = off)")
        check_range("seed", self.seed, 0, 2**32 - 1)
        check_range("batch_size", self.batch_size, 1, 10**6)
        for name in ("bad_words", "stop_strings"):
            for i, value in enumerate(getattr(self, name)):
                if not isinstance(value, str) or not value:
                    raise TailorError(f"{name}[{i}] must be a non-empty string, got {value!r}.")

    @property
    def strategy(self) -> str:
        """'greedy', 'beam', 'sample' or 'beam-sample': what the settings amount to."""
        if self.do_sample:
            return "beam-sample" if self.num_beams > 1 else "sample"
        return "beam" if self.num_beams > 1 else "greedy"
