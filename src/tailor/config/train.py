"""The training loop's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tailor.config.base import check_range, setting
from tailor.errors import TailorError

COUNT = 10**9  # upper bound of counts of steps and samples: larger is a typo, and overflows further on
SEED = 2**32 - 1  # numpy's generators take seeds up to this


TRACKERS = ("tensorboard", "mlflow")  # train.report_to (train/tracking.py writes them)


@dataclass
class TrainConfig:
    learning_rate: float = setting(5e-5, help="Peak AdamW learning rate.")
    weight_decay: float = setting(0.0, help="AdamW weight decay (not applied to biases and norms).")
    betas: list[float] = setting([0.9, 0.999], help="AdamW betas.")
    batch_size: int = setting(8, help="Samples per micro-batch.")
    grad_accum: int = setting(1, help="Micro-batches per optimizer step.")
    epochs: float = setting(1.0, help="Passes over the training samples (fractions allowed).")
    max_steps: int = setting(0, help="Stop after this many optimizer steps (0 = from epochs).")
    warmup_steps: int = setting(0, help="Linear warmup steps; if 0, warmup_ratio is used.")
    warmup_ratio: float = setting(0.05, help="Warmup as a share of all steps, when warmup_steps is 0.")
    schedule: Literal["cosine", "linear", "constant"] = setting("cosine", help="Decay after warmup.")
    max_grad_norm: float = setting(1.0, help="Gradient clipping norm (0 = off).")
    optimizer: Literal["auto", "adamw", "adamw_bf16", "adamw_fp8", "adamw_8bit", "adamw_4bit"] = setting(
        "auto", help="'auto': 'adamw_fp8' in one process with the CPU speed paths, 'adamw' (torch's fused AdamW, "
        "fp32 moments) elsewhere. Memory for precision, tailor's own steps (kernels/adamw.cpp, adamw_fp8.cpp; about as "
        "fast as the fused 'adamw' on a CPU, BENCHMARKS.md): 'adamw_bf16' keeps AdamW's two moments in bf16, rounded "
        "stochastically, 4 bytes a parameter instead of 8; 'adamw_fp8' in 8 bits, a code a value and an fp32 scale "
        "per 256 values, rounded to nearest, 2 bytes (SmolLM2-135M: 1.08 GB -> 0.54 -> 0.27). Losses close to, not "
        "equal to, 'adamw''s. 'adamw_8bit' / 'adamw_4bit' keep them quantized in blocks of 256 values (torchao's "
        "AdamW8bit / AdamW4bit, the HF Trainer's adamw_torch_8bit / 4bit), for GPUs: about 2 or 1 bytes a parameter "
        "(1.7B: 13.6 -> 3.4 / 1.7 GB). Cost: the first step compiles the update (tens of seconds on a CPU), and on a "
        "CPU each step's update is much slower than the fused 'adamw'. One process or DDP (not fsdp or deepspeed). "
        "They need torchao (pip install 'tailor[lowbit]'; make install has it)."
    )
    precision: Literal["auto", "bf16", "fp16", "fp32"] = setting(
        "auto", help="'auto': bf16 autocast on CPUs with native bf16 and on GPUs that have bf16, fp16 with loss "
        "scaling on GPUs without it, fp32 otherwise; 'fp16' is for GPUs only."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = setting(
        "auto", help="Where to train: 'auto' takes CUDA, then Apple MPS, then the CPU. Under torchrun each process "
        "takes its own GPU (cuda:LOCAL_RANK)."
    )
    gradient_checkpointing: bool = setting(
        False, help="Recompute each layer's activations in the backward pass instead of keeping them: less "
        "memory (activations of one layer, not all), about a third more compute per step."
    )
    max_pass_tokens: int | Literal["auto"] = setting(
        "auto", help="Memory for speed: the most padded tokens (rows x longest row) one forward and backward pass takes. "
        "A micro-batch over it runs as several passes of fewer rows whose gradients add up to the same step (the "
        "loss is normalised by the step's supervised tokens). Activation memory grows with the pass (SmolLM2-135M: "
        "about 1 MB a token, 2 GB for 8 rows of 256 tokens); smaller passes cost speed (smaller matrix products, "
        "and a prefix the rows share runs once per pass). 'auto': 1024 with the CPU speed paths, whose products of "
        "1,024 rows run within a few per cent of 2,048 (BENCHMARKS.md); no cap elsewhere (a GPU wants the larger products). "
        "One process only; 0 = no cap."
    )
    retain_memory_mb: int | Literal["auto"] = setting(
        "auto", help="Memory for speed, with the CPU speed paths: freed memory (MiB) the process keeps for the next "
        "steps instead of giving it back to the system and page-faulting it in again. Once the process holds more "
        "than this above where the last give-back left it, after a step, the freed pages go back; so it may stay up "
        "to this much above what it uses, and a cap below what one step frees (1.5-3 GB for SmolLM2-135M) gives "
        "back every step. 'auto': on mimalloc (how the `tailor` command runs) an eighth of the machine's RAM, "
        "0.5-4 GiB, and past it while over a quarter of the RAM is still available (MemAvailable, or the cgroup's "
        "limit), so steps that free more than the eighth keep it too: on a Xeon with AMX training ran 1.2x as fast "
        "as at 0, at +0.1 GB peak, and SmolLM2-1.7B's shapes at 4 layers 1.17x as fast as under the eighth alone, "
        "at +0.16 GB (BENCHMARKS.md); on "
        "glibc's malloc (TAILOR_ALLOCATOR=system, or tailor as a library) 0, since its heap fragments when it keeps "
        "blocks (6.5 GB peak against 4.5). 0 = give freed memory back at once (mimalloc: after its own delay of a "
        "second; glibc: every block of 1 MiB or more as it is freed, which cost 19-28% of the speed on a CPU "
        "without AVX-512). TAILOR_RETAIN_MEMORY=N (MiB) overrides it."
    )
    cpu_fast_paths: bool = setting(
        True, help="On the CPU, one process: tailor's speed paths (C++ kernels for RMSNorm and the rotary "
        "embedding, the resident bf16 LM head, the sparse embedding gradient, gated MLPs that keep two of their four "
        "wide activations for the backward, the retained heap). Off, or on "
        "any other device, training takes the plain PyTorch/transformers path."
    )
    kernels: bool = setting(
        True, help="Within the CPU speed paths: tailor's C++ kernels (RMSNorm and the rotary embedding; argmax in "
        "token accuracy), built on first use with g++ and ninja into ~/.cache/tailor/kernels. Off: those ops run as "
        "torch's own (same results to rounding) and nothing is built, e.g. where no compiler is installed or to "
        "compare with torch's arithmetic; the other speed paths stay (train.cpu_fast_paths turns all off)."
    )
    seed: int = setting(0, help="Seed for data order, initialisation and sampling.")
    eval_every: int = setting(50, help="Validate every N optimizer steps (0 = only at the end).")
    patience: int = setting(0, help="Early stopping: validations without improvement before stopping (0 = off).")
    save_every: int = setting(50, help="Write a resumable checkpoint every N optimizer steps (0 = only at the end).")
    log_every: int = setting(10, help="Log to log.jsonl every N optimizer steps.")
    threads: int = setting(0, help="torch intra-op threads (0 = torch's default).")
    report_to: list[str] = setting(
        [], help="Experiment trackers beside log.jsonl: [tensorboard] (runs/<name>/tensorboard/), [mlflow] (a local "
        "store, see tracking_uri), or both; empty: none. Both work offline."
    )
    tracking_uri: str = setting(
        "", help="With report_to mlflow: the MLflow tracking URI; empty: a SQLite store, mlflow.db, in output_dir."
    )
    strategy: Literal["ddp", "fsdp", "deepspeed"] = setting(
        "ddp", help="Under torchrun with several processes: 'ddp' keeps a full model copy per process; 'fsdp' "
        "shards parameters, gradients and optimizer state over the processes (PyTorch FSDP2, per decoder "
        "layer), for models that do not fit one device; 'deepspeed' trains through deepspeed.initialize with "
        "the config in train.deepspeed (ZeRO stage 0-2). ddp and fsdp have no effect in a single process; "
        "deepspeed runs through DeepSpeed there too."
    )
    deepspeed: str | dict[str, Any] | None = setting(
        None, help="With train.strategy deepspeed: a DeepSpeed JSON config file, or the same as a mapping (a file "
        "is read when the config is loaded and the run's config.yaml keeps its content). \"auto\" values "
        "(batch sizes, gradient_accumulation_steps, gradient_clipping, optimizer lr, betas, weight_decay) are "
        "filled from these train settings; an explicit value that disagrees is an error."
    )

    def __post_init__(self) -> None:
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise TailorError(f"train.report_to: '{unknown[0]}' is not one of {', '.join(TRACKERS)}.")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise TailorError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise TailorError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise TailorError("set epochs > 0 or max_steps > 0.")
        check_range("learning_rate", self.learning_rate, 0, 1, low_open=True)
        check_range("weight_decay", self.weight_decay, 0, 1)
        if len(self.betas) != 2:
            raise TailorError(f"betas must be two numbers [beta1, beta2], got {self.betas}.")
        for i, beta in enumerate(self.betas):
            check_range(f"betas[{i}]", beta, 0, 1, high_open=True)
        for name in ("batch_size", "grad_accum"):
            check_range(name, getattr(self, name), 1, 10**6)
        check_range("epochs", self.epochs, 0, 10**6)
        check_range("warmup_ratio", self.warmup_ratio, 0, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0, None, note=" (0 = off; a negative norm flips the gradients)")
        for name in ("max_steps", "warmup_steps", "eval_every", "save_every", "patience"):
            check_range(name, getattr(self, name), 0, COUNT)
        check_range("log_every", self.log_every, 1, COUNT)
        check_range("threads", self.threads, 0, 4096, note=" (0 = torch's default)")
        if self.max_pass_tokens != "auto":
            check_range("max_pass_tokens", self.max_pass_tokens, 0, COUNT, note=" (0 = no cap; 'auto')")
        if self.retain_memory_mb != "auto":
            check_range("retain_memory_mb", self.retain_memory_mb, 0, 2**24, note=" (0 = give freed memory back; 'auto')")
        check_range("seed", self.seed, 0, SEED)
        if self.optimizer not in ("auto", "adamw") and self.strategy != "ddp":
            raise TailorError(f"train.optimizer '{self.optimizer}' runs in one process or under DDP; with train.strategy "
                              f"'{self.strategy}' use train.optimizer adamw.")
        if self.strategy == "deepspeed":
            from tailor.config import deepspeed

            self.deepspeed = deepspeed.load(self)  # a file's content: the run's config.yaml stands alone
        elif self.deepspeed is not None:
            raise TailorError(f"train.deepspeed is set but train.strategy is '{self.strategy}'; "
                              "set train.strategy=deepspeed to use it.")
