"""The device layer (tailor.device): which device and precision a run gets, that the loop goes through
Accelerate on the device it was given, that every tensor lands there, and that no module names a device."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import read_jsonl
from tailor import device as devices
from tailor.cli import main as cli
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.train import distributed, loop
from tailor.workflow import train_job

SRC = Path(__file__).resolve().parents[1] / "src" / "tailor"


@pytest.fixture(autouse=True)
def fresh_device():
    """Each test chooses its own device; the process-wide choice is restored after it."""
    saved = devices._current
    yield
    devices._current = saved


def test_auto_takes_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setattr(devices, "mps_available", lambda: True)
    assert devices.resolve("auto") == torch.device("cuda", 0)
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    assert devices.resolve("auto") == torch.device("mps")
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    assert devices.resolve("auto") == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")


def test_each_process_of_a_launch_takes_its_own_gpu(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert devices.resolve("cuda") == torch.device("cuda", 3)


def test_a_device_the_machine_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)
    for name in ("cuda", "mps"):
        with pytest.raises(TailorError, match=f"device '{name}'.*train.device / --device") as e:
            devices.resolve(name)
        assert e.value.exit_code == 2
    with pytest.raises(TailorError, match="not one of auto, cpu, cuda, mps"):
        devices.resolve("tpu")


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (True, True, True)])
def test_emulated_bf16_is_not_native_on_x86(monkeypatch, avx512_bf16, amx, native):
    # oneDNN says bf16 on any AVX-512 CPU (it emulates it); auto precision wants the instructions themselves.
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert devices.cpu_has_bf16() is native
    assert devices.half_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_this_cpus_bf16_answer_agrees_with_its_flags():
    flags = Path("/proc/cpuinfo")
    if devices.platform.machine() != "x86_64" or not flags.exists():
        pytest.skip("reads x86 Linux CPU flags")
    words = set(flags.read_text().split())
    assert devices.cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16"} & words)


def test_mixed_precision_follows_the_device(monkeypatch):
    cpu, gpu, mps = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.half_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.half_dtype("auto", cpu) is None  # no native bf16: fp32
    assert devices.half_dtype("bf16", cpu) == torch.bfloat16  # asked for: emulated
    monkeypatch.setattr(devices, "gpu_has_bf16", lambda d: True)
    assert devices.half_dtype("auto", gpu) == torch.bfloat16
    assert devices.half_dtype("fp16", gpu) == torch.float16
    monkeypatch.setattr(devices, "gpu_has_bf16", lambda d: False)
    assert devices.half_dtype("auto", gpu) == torch.float16  # a GPU without bf16: fp16 with loss scaling
    assert devices.half_dtype("fp32", gpu) is None
    assert devices.half_dtype("auto", mps) is None
    assert devices.describe(torch.float16, gpu) == "device cuda:0, fp16"
    with pytest.raises(TailorError, match="'fp16' needs a GPU"):
        devices.check_precision("fp16", cpu)


def test_put_moves_nested_batches_and_leaves_other_values():
    batch = {"ids": torch.ones(2, 3), "parts": [torch.zeros(1), 5], "name": "x"}
    moved = devices.put(batch, torch.device("meta"))
    assert moved["ids"].device.type == "meta" and moved["parts"][0].device.type == "meta"
    assert moved["parts"][1] == 5 and moved["name"] == "x"
    same = devices.put(batch, torch.device("cpu"))
    assert same["ids"] is batch["ids"]  # already there: no copy


class DeviceRecorder(TorchDispatchMode):
    """Every tensor an aten op produces, by device; 'meta' tensors (shapes without data: transformers builds
    a model on them before it loads the weights) are not placed anywhere and are left out."""

    def __init__(self):
        super().__init__()
        self.devices = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.devices.add(t.device)
        return out


def test_explicit_cpu_trains_through_accelerate_and_every_tensor_is_on_it(tiny_config, monkeypatch, capsys):
    made = []
    real = distributed.accelerator
    monkeypatch.setattr(distributed, "accelerator", lambda device: made.append(real(device)) or made[-1])
    cfg = load_config(tiny_config(train={"device": "cpu", "max_steps": 3, "eval_every": 3}))
    with DeviceRecorder() as recorder:
        summary = train_job(cfg)
    assert [a.device for a in made] == [torch.device("cpu")]  # the loop went through Accelerate, on the CPU
    assert recorder.devices == {torch.device("cpu")}
    assert summary["train"]["device"] == "cpu" and summary["train"]["precision"] == "fp32"
    # The fp32 RMSNorm kernel needs AVX-512F; a CPU without it runs the norms' torch ops keeping less.
    from tailor.kernels import build

    paths = ("kernel RMSNorm" if build.buildable() else "lean RMSNorm backward") + \
        ", sparse embedding gradient, lean MLP backward"
    # train.optimizer auto: bf16 moments for fp32 weights in one process on the speed paths, named in the line
    assert f"device cpu, fp32; CPU fast paths: {paths}; optimizer adamw_fp8 (auto)" in capsys.readouterr().out
    steps = [r for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
    assert steps and all(r["peak_memory_mb"] > 0 for r in steps)
    assert "peak memory" in (cfg.run_dir / "report.html").read_text()

    from tailor.generate.replies import generate
    from tailor.runs import load

    loaded = load(cfg.run_dir)
    run_cfg, model, tokenizer = loaded.cfg, loaded.model, loaded.tokenizer
    with DeviceRecorder() as recorder:
        out = generate(model, tokenizer, [[5, 6, 7]], run_cfg.decode)
    assert out[0]["tokens"] > 0 and recorder.devices == {torch.device("cpu")}


def test_gradient_checkpointing_and_the_plain_path_train_as_the_fast_path(tiny_config, monkeypatch):
    import transformers.modeling_utils as hf

    recomputed = []
    real = hf.checkpoint  # what gradient_checkpointing_enable wraps each layer's forward in
    monkeypatch.setattr(hf, "checkpoint", lambda *a, **k: recomputed.append(1) or real(*a, **k))

    def losses(name, **train):
        cfg = load_config(tiny_config(name=name, train={"max_steps": 4, "eval_every": 0, "save_every": 0, **train}))
        train_job(cfg)
        return [r["loss"] for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]

    fast = losses("fast")
    assert not recomputed
    assert losses("checkpointed", gradient_checkpointing=True) == pytest.approx(fast, rel=1e-5)
    assert len(recomputed) == 4 * 2  # each of the 2 layers checkpointed at each of the 4 steps
    assert losses("plain", cpu_fast_paths=False) == pytest.approx(fast, rel=1e-4)


def test_fp16_trains_with_loss_scaling(tiny_config, monkeypatch):
    """The GPU-without-bf16 path (fp16 autocast + GradScaler), run on the CPU's fp16 autocast."""
    calls = []
    real = loop.scaled_clip_and_step
    monkeypatch.setattr(loop, "scaled_clip_and_step", lambda *a: calls.append(a[-1]) or real(*a))
    monkeypatch.setattr(devices, "half_dtype", lambda precision, device=None: torch.float16)
    monkeypatch.setattr(devices, "check_precision", lambda precision, device=None: None)
    cfg = load_config(tiny_config(train={"max_steps": 8, "learning_rate": 3e-3, "eval_every": 0, "save_every": 0}))
    summary = train_job(cfg)
    assert len(calls) == 8 and all(isinstance(s, torch.amp.GradScaler) for s in calls)
    assert summary["train"]["precision"] == "fp16"
    losses = [r["loss"] for r in read_jsonl(cfg.run_dir / "log.jsonl") if r["split"] == "train"]
    assert all(l == l for l in losses) and losses[-1] < losses[0]


def test_commands_refuse_a_missing_device_before_writing_anything(tiny_config, monkeypatch, capsys):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    path = tiny_config()
    assert cli(["train", str(path), "--device", "cuda"]) == 2
    assert "device 'cuda'" in capsys.readouterr().err
    assert not load_config(path).run_dir.exists()
    assert cli(["eval", "runs/none", "--device", "cuda"]) == 2
    assert cli(["train", str(path), "train.precision=fp16", "train.device=cpu"]) == 2
    assert "'fp16' needs a GPU" in capsys.readouterr().err
    assert not load_config(path).run_dir.exists()


def test_qlora_needs_lora_and_a_cuda_gpu(tiny_config, capsys):
    with pytest.raises(TailorError, match="model.lora.rank > 0"):
        load_config(tiny_config(model={"quantize": "4bit"}))
    path = tiny_config(model={"quantize": "4bit", "lora": {"rank": 4}}, train={"device": "cpu"})
    assert cli(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.quantize '4bit'" in err and "needs a CUDA GPU" in err
    assert not load_config(path).run_dir.exists()


def test_no_module_but_the_device_layer_names_a_device():
    pattern = re.compile(r"""torch\.cuda|torch\.mps|\.cuda\(|["'](cuda|cpu|mps|nccl|gloo)["']""")
    allowed = {("report/html.py", '"cpu": cpu,')}  # the report's "cpu" row is the processor's name
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel == "device.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "Literal[" not in line and (rel, line.strip()) not in allowed:
                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
