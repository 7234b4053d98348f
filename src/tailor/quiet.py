"""Library messages that tell a tailor user nothing to act on, dropped where they are logged.

transformers imports torchao on every model load once torchao is installed (for train.optimizer adamw_8bit /
adamw_4bit), and that import logs that torchao's CUDA-only extensions do not load on this machine, and torch
logs that torchao registers enums the old way: a screenful of warnings before every command's output.
"""

from __future__ import annotations

import logging

DROPPED = {  # logger name: fragments; a record whose message contains all of one entry's is dropped
    "torchao": [("Failed to load", "torchao/_C", "Could not load this library")],
    "torch.utils._pytree": [("is an Enum subclass and is now natively supported by torch.compile",)],
}


class Drop(logging.Filter):
    def __init__(self, patterns: list[tuple[str, ...]]) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(all(part in message for part in pattern) for pattern in self.patterns)


def install() -> None:
    for name, patterns in DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, Drop) for f in logger.filters):
            logger.addFilter(Drop(patterns))
