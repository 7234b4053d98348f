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
    train, eval, generate                the loop, scoring and metrics, decoding
    models                               loading, heads, freezing, LoRA, quantization
    data, config                         sources, templates, chat formats, tokenizing; typed settings
    device, precision, allocator, fsutil, errors
"""

__version__ = "0.1.0"

LAYERS = [
    ["cli"],
    ["commands"],
    ["api"],
    ["search"],
    ["workflow", "serve", "export"],
    ["report", "runs"],
    ["tasks"],
    ["train", "eval", "generate"],
    ["models"],
    ["data", "config"],
    ["device", "precision", "allocator", "fsutil", "errors"],
]
