"""tailor doctor RUN [--gguf FILE]: do training, tailor serve and an export agree on chat template and tokens?

Compares the run's tokenizer and tailor.yaml (what training used) with tailor serve's prompt rendering
and stop tokens and, with --gguf, with an exported GGUF file (its embedded tokenizer, chat template and
special tokens, read with the gguf package) and the Ollama Modelfile beside it. Prints each mismatch
with what to do. Exit status: 0 when all agree, 1 on a mismatch, 2 on bad input.
"""

from __future__ import annotations

NAME = "doctor"
HELP = "check that a run's tokenizer, tailor serve and exported GGUF/Modelfile agree on chat template and tokens"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>) or model folder")
    parser.add_argument("--gguf", metavar="FILE", action="append", default=[],
                        help="an exported GGUF file to check, with the Modelfile beside it (repeatable)")


def main(args) -> int:
    from pathlib import Path

    from tailor.errors import TailorError
    from tailor.export import agreement

    ggufs = [Path(g) for g in args.gguf]
    for g in ggufs:
        if not g.is_file():
            raise TailorError(f"--gguf {g}: no such file.")
    run = agreement.open_run(args.run)
    checked = ["run tokenizer", "tailor serve"]
    findings = agreement.check_run(run) + agreement.check_server(run)
    for g in ggufs:
        findings += agreement.check_gguf(run, g) + agreement.check_modelfile(run, g)
        checked.append(f"GGUF {g}")
        if (g.parent / "Modelfile").is_file():
            checked.append(f"Modelfile {g.parent / 'Modelfile'}")
    for f in findings:
        print(f"MISMATCH [{f.where}] {f.what}\n  fix: {f.fix}")
    if findings:
        print(f"{len(findings)} mismatch(es) against the run's tokenizer in {run.folder}.")
        return 1
    print(f"all agree with the run's tokenizer in {run.folder}: {', '.join(checked)}.")
    return 0
