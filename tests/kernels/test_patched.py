"""`kernels.patched` applies every speed path that fits and undoes each one; the kernels' switch and build folder."""

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.models.llama import modeling_llama

from tailor import kernels
from tailor.config.decode import DecodeConfig
from tailor.generate.replies import generate
from tailor.kernels import build
from tailor.kernels.head import output_head
from tailor.kernels.rotary import ORIGINAL
from tailor.train.loop import make_optimizer

from tiny import make_causal_lm, make_tokenizer

# Built where the CPU can: the fp32 norm needs AVX-512F (elsewhere the norms run LeanNorm), the bf16 rotary
# AVX512-BF16.
NORM = "kernel RMSNorm" if build.buildable() else "lean RMSNorm backward"
KERNEL_PATHS = [NORM] + (["kernel rotary"] if kernels.supported() else [])


def state(model) -> dict:
    """What the speed paths change: patched norms, the rotary function, the head's buffers, the sparse flag."""
    return {"norms": sum("forward" in vars(m) for m in model.modules() if type(m) is modeling_llama.LlamaRMSNorm),
            "mlps": sum("forward" in vars(m) for m in model.modules() if type(m) is modeling_llama.LlamaMLP),
            "projections": sum("forward" in vars(m) for m in model.modules() if type(m) is torch.nn.Linear),
            "rotary": modeling_llama.apply_rotary_pos_emb is not ORIGINAL,
            "head": hasattr(output_head(model), "_tailor_resident"),
            "sparse": model.get_input_embeddings().sparse,
            "kernels": kernels.available()}


def test_training_paths_are_applied_and_undone(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    optimizer = make_optimizer(model, 1e-3, 0.0, [0.9, 0.999])
    before = state(model)
    assert before == {"norms": 0, "mlps": 0, "projections": 0, "rotary": False, "head": False, "sparse": False, "kernels": kernels.supported()}
    with kernels.patched(model, training=True, optimizer=optimizer, half=torch.bfloat16) as paths:
        assert paths == KERNEL_PATHS + ["resident bf16 LM head", "sparse embedding gradient", "lean MLP backward",
                                        "lean bf16 projections"]
        inside = state(model)
        assert inside["norms"] == 2 * model.config.num_hidden_layers + 1
        assert inside["mlps"] == model.config.num_hidden_layers
        assert inside["projections"] == 7 * model.config.num_hidden_layers  # q, k, v, o, gate, up, down
        assert (inside["rotary"], inside["head"], inside["sparse"]) == (kernels.supported(), True, True)
    assert state(model) == before

    with kernels.patched(model, training=True, optimizer=optimizer, half=None) as paths:  # fp32: no bf16 paths
        assert paths == [NORM, "sparse embedding gradient", "lean MLP backward"]
    with pytest.raises(RuntimeError), kernels.patched(model, training=True, optimizer=optimizer, half=torch.bfloat16):
        raise RuntimeError("a failed step")
    assert state(model) == before  # undone on an error too


def test_compiled_false_leaves_out_the_kernels_and_enabled_false_everything(tiny_model):
    """train.kernels false: the other paths stay (the norms through LeanNorm), nothing runs on (or builds) the
    kernels; cpu_fast_paths false: none."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    optimizer = make_optimizer(model, 1e-3, 0.0, [0.9, 0.999])
    with kernels.patched(model, training=True, compiled=False, optimizer=optimizer, half=torch.bfloat16) as paths:
        assert paths == ["lean RMSNorm backward", "resident bf16 LM head", "sparse embedding gradient",
                         "lean MLP backward", "lean bf16 projections"]
        assert state(model)["norms"] == 2 * model.config.num_hidden_layers + 1 and not kernels.available()
    with kernels.patched(model, training=True, enabled=False, optimizer=optimizer, half=torch.bfloat16) as paths:
        assert paths == [] and not any(state(model).values())
    assert kernels.available() == kernels.supported()


def test_decode_kernels_false_gives_the_same_replies_on_torch_s_ops(tmp_path, monkeypatch):
    """decode.kernels: on bf16 weights the kernels decode where they built; off, none is asked for, same tokens."""
    model = AutoModelForCausalLM.from_pretrained(make_causal_lm(tmp_path / "m", hidden=128))
    model.resize_token_embeddings(model.config.vocab_size, pad_to_multiple_of=16)  # whole blocks of 16 outputs
    model = model.to(torch.bfloat16)
    tok = make_tokenizer(tmp_path / "t")
    with kernels.patched(model, training=False) as paths:
        if kernels.supported():
            assert paths == ["kernel products, RMSNorm, rotary and argmax"]
        else:  # bf16 weights decode in fp32 there, through widen.cpp where the CPU has AVX-512
            assert paths == (["kernel products, RMSNorm, rotary and argmax in fp32 on bf16 weights"]
                             if build.buildable() else [])
    prompts = [[5, 6, 7, 8], [9, 10]]
    on = generate(model, tok, prompts, DecodeConfig(max_new_tokens=12))
    asked = []
    real = build.built
    monkeypatch.setattr(build, "built", lambda: asked.append(1) or real())
    off = generate(model, tok, prompts, DecodeConfig(max_new_tokens=12, kernels=False))
    assert not asked  # every op was torch's
    assert [r["text"] for r in off] == [r["text"] for r in on]
    generate(model, tok, prompts, DecodeConfig(max_new_tokens=2))
    assert asked or not build.buildable()  # on again: the kernels are asked for


def test_the_build_folder_changes_with_every_source(tmp_path):
    """The compiled extension is cached by content: editing any source or header gives a new folder (one build)."""
    for name in build.SOURCES + build.HEADERS:
        shutil.copy(build.HERE / name, tmp_path / name)
    same = build.digest(tmp_path)
    assert same == build.digest() and build.cache_folder().name.endswith(same)
    seen = {same}
    for name in build.SOURCES + build.HEADERS:
        original = (tmp_path / name).read_text()
        (tmp_path / name).write_text(original + "\n// edited\n")
        seen.add(build.digest(tmp_path))
        (tmp_path / name).write_text(original)
    assert len(seen) == 1 + len(build.SOURCES + build.HEADERS)
    assert build.digest(tmp_path) == same
    every = build.SOURCES + build.HEADERS + build.PORTABLE + build.PORTABLE_HEADERS  # each source in a build's digest
    assert set(every) == {p.name for p in build.HERE.iterdir() if p.suffix in (".cpp", ".h")}


def test_training_drops_the_decoding_probes(tiny_model):
    """Decoding's probe weights (a copy of each product's shape, the LM head's the largest) do not stay into training."""
    from tailor.kernels import matmul

    matmul.probe_weight(64, 32)
    assert matmul.probe_weight.cache_info().currsize >= 1
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with kernels.patched(model, training=True, optimizer=make_optimizer(model, 1e-3, 0.0, [0.9, 0.999])):
        assert matmul.probe_weight.cache_info().currsize == 0
