"""tailor: tailor a pretrained language model to one task and carry it to use.

Layers, top to bottom; a module imports only from its own layer or the ones below it
(tests/test_layers.py checks it):

    cli
    commands
    api                                  the CLI's jobs as Python functions
    search                               studies that call the workflow
    workflow, serve, export              jobs over a run folder: train/run, the HTTP server, exports
    report, runs                         run reports, reading run folders
    tasks                                one module per task family, and encoder-decoder support
    train, eval, generate                the loop, scoring and metrics, decoding (train and generate import
                                         neither one the other: what both need lives below)
    kernels                              CPU speed paths: C++ kernels by operation, patched() applies / undoes them
    models                               loading, heads, freezing, LoRA, quantization
    data, config                         sources, templates, chat formats, tokenizing; typed settings
    device, precision, allocator, fsutil, errors, quiet
"""

__version__ = "0.1.0"

from tailor import quiet  # noqa: E402  before any library that logs at import is imported

quiet.install()

LAYERS = [
    ["cli"],
    ["commands"],
    ["api"],
    ["search"],
    ["workflow", "serve", "export"],
    ["report", "runs"],
    ["tasks"],
    ["train", "eval", "generate"],
    ["kernels"],
    ["models"],
    ["data", "config"],
    ["device", "precision", "allocator", "preload", "fsutil", "errors", "quiet"],
]
# Units of one layer that import neither one the other (tests/test_layers.py): what both need lives below.
APART = [("train", "generate")]
