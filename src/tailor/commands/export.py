"""tailor export RUN_DIR --merged OUT | --gguf OUT.gguf: carry a run's model out of tailor.

--merged OUT     a plain Hugging Face folder (safetensors, tokenizer, chat template, tailor.yaml) with any
                 LoRA adapter merged into the base, loadable with from_pretrained and nothing else.
--gguf OUT.gguf  one GGUF file for llama.cpp-style runtimes (llama, qwen2 and gpt2 models, byte-level BPE
                 tokenizers), with the tokenizer and chat template inside; --gguf-dtype picks f16 (default),
                 f32 or q8_0 weights. An Ollama `Modelfile` is written beside it (chat template, stop strings,
                 the run's decoding defaults); one tailor did not write is only replaced with --overwrite.
Both can be given at once. Outputs are written atomically.
"""

from __future__ import annotations

NAME = "export"
HELP = "export a run's model as a merged Hugging Face folder and/or a GGUF file"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>), model folder or adapter folder")
    parser.add_argument("--merged", metavar="OUT", help="write a standalone Hugging Face folder here")
    parser.add_argument("--gguf", metavar="OUT.gguf", help="write a GGUF file here")
    parser.add_argument("--gguf-dtype", choices=["f16", "f32", "q8_0"], default="f16", help="GGUF weight type")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def main(args) -> int:
    from pathlib import Path

    from tailor.errors import TailorError
    from tailor.export.gguf_file import write_gguf
    from tailor.export.modelfile import check_writable, write_modelfile
    from tailor.export.standalone import export_merged
    from tailor.runs import load

    if not args.merged and not args.gguf:
        raise TailorError("say what to export: --merged OUT (a Hugging Face folder) and/or --gguf OUT.gguf.")
    if args.gguf:
        gguf = Path(args.gguf)
        if gguf.suffix != ".gguf":
            raise TailorError(f"--gguf takes a file name ending in .gguf, got {gguf}.")
        if gguf.exists() and not args.overwrite:
            raise TailorError(f"{gguf} already exists; pass --overwrite to replace it.")
        check_writable(gguf, args.overwrite)  # before any work: never replace a Modelfile tailor did not write
    if args.merged:
        out = export_merged(args.run, args.merged, overwrite=args.overwrite)
        print(f"merged model folder: {out}")
    if args.gguf:
        loaded = load(args.run, strict=False)
        if loaded.kind != "generate":
            what = "a classifier" if loaded.kind == "classify" else "an encoder-decoder"
            raise TailorError(f"GGUF export needs a llama-family causal language model; this run's model is {what} "
                              f"({type(loaded.model).__name__}).")
        out = write_gguf(loaded.model, loaded.tokenizer, args.gguf, args.gguf_dtype, name=loaded.name)
        print(f"GGUF file: {out} ({out.stat().st_size / 1e6:.1f} MB, {args.gguf_dtype})")
        modelfile, notes = write_modelfile(out, loaded.tokenizer, loaded.settings, overwrite=args.overwrite)
        print(f"Ollama Modelfile: {modelfile} (ollama create NAME -f {modelfile})")
        for note in notes:
            print(f"note: {note}")
    return 0
