"""`tailor train` with train.strategy deepspeed: 2 CPU processes (gloo) under torchrun train through
deepspeed.initialize with ZeRO and must match one plain process, write plain Hugging Face folders from
rank 0, and resume; bad DeepSpeed configs stop with exit code 2 before a run folder exists."""

import json
import sys
from types import SimpleNamespace

import pytest
import yaml

from multiprocess_helpers import assert_matches_one_process, assert_same_final_model, by_split, torchrun
from tailor.cli import main
from tailor.errors import TailorError
from tailor.config import deepspeed as ds_config
from tailor.config import config_from_dict, dump_config, load_config
from tailor.workflow import train_job
from cli_process import tailor_cli

# As in the FSDP test: 41 samples in micro-batches of 5 (one rank's share of the last one is empty), and a
# constant schedule, so a 3-step run resumed up to 6 steps must give the 6-step run's losses.
TRAIN = {"batch_size": 5, "grad_accum": 2, "max_steps": 6, "eval_every": 3, "save_every": 3, "log_every": 1,
         "learning_rate": 2e-3, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.1,
         "optimizer": "adamw"}  # the processes' optimizer for the one-process reference too (auto: adamw_fp8 there)
AUTO = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
        "gradient_clipping": "auto"}


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_auto_values_come_from_the_train_settings():
    train = SimpleNamespace(batch_size=6, grad_accum=3, max_grad_norm=0.5, learning_rate=1e-4, betas=[0.9, 0.95],
                            weight_decay=0.01, precision="fp32")
    source = {**AUTO, "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"},
              "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
              "bf16": {"enabled": "auto"}}
    ds = ds_config.resolve(source, train, world_size=2, hidden_size=16)
    assert ds["train_micro_batch_size_per_gpu"] == 3  # train.batch_size is the global micro-batch
    assert ds["gradient_accumulation_steps"] == 3 and ds["train_batch_size"] == 18
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is False
    assert ds["optimizer"]["params"] == {"lr": 1e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01}
    assert ds["zero_optimization"]["reduce_bucket_size"] == 256
    assert source["gradient_clipping"] == "auto"  # the caller's mapping is not changed
    # Absent keys get tailor's values too, and an explicit value that agrees is kept.
    ds = ds_config.resolve({"gradient_accumulation_steps": 3}, train, world_size=1)
    assert ds["gradient_accumulation_steps"] == 3 and ds["gradient_clipping"] == 0.5 and ds["train_batch_size"] == 18
    # The per-process micro-batch is checked once the number of processes is known (at train time).
    explicit = {"train_micro_batch_size_per_gpu": 3}
    assert ds_config.resolve(explicit, train, world_size=2)["train_micro_batch_size_per_gpu"] == 3
    ds_config.resolve(explicit, train, world_size=None)
    with pytest.raises(TailorError, match="train_micro_batch_size_per_gpu\" is 3 but train.batch_size is 6"):
        ds_config.resolve(explicit, train, world_size=1)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{\"zero_optimization\": {\"stage\": 2},", "not valid JSON (line 1"),
    (json.dumps({"gradient_accumulation_steps": 4}), "\"gradient_accumulation_steps\" is 4 but train.grad_accum is 2"),
    (json.dumps({"optimizer": {"type": "AdamW", "params": {"lr": 0.1}}}), "\"optimizer.params.lr\" is 0.1 but train.learning_rate"),
    (json.dumps({"zero_optimization": {"stage": 3}}), "\"zero_optimization.stage\" 3 is not supported"),
    (json.dumps({"scheduler": {"type": "WarmupLR"}}), "remove the \"scheduler\" section"),
    (json.dumps({"steps_per_print": "auto"}), "\"steps_per_print\" is \"auto\" but no tailor setting fills it"),
])
def test_a_bad_deepspeed_config_exits_2_before_the_run_folder(tiny_config, tmp_path, capsys, content, message):
    cfg_path = tiny_config(train=TRAIN)
    ds_path = tmp_path / "ds.json"
    if content is not None:
        ds_path.write_text(content)
    code = main(["train", str(cfg_path), "train.strategy=deepspeed", f"train.deepspeed={ds_path}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and str(ds_path) in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_deepspeed_settings_without_the_strategy_or_the_package_exit_2(tiny_config, tmp_path, capsys, monkeypatch):
    cfg_path = tiny_config(train=TRAIN)
    ds_path = write_json(tmp_path / "ds.json", {"zero_optimization": {"stage": 1}})
    assert main(["train", str(cfg_path), f"train.deepspeed={ds_path}"]) == 2
    assert "set train.strategy=deepspeed" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "train.strategy=deepspeed"]) == 2
    assert "needs train.deepspeed" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny").exists()
    # The package is needed to train only (evaluating or serving the run reads its config without it).
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as if it were not installed
    assert main(["train", str(cfg_path), "train.strategy=deepspeed", f"train.deepspeed={ds_path}"]) == 2
    assert "pip install --no-deps deepspeed==0.19.8" in capsys.readouterr().err
    assert json.loads((tmp_path / "runs" / "tiny" / "status.json").read_text())["status"] == "failed"


def test_the_run_config_keeps_the_json_content(tiny_config, tmp_path):
    """A run folder's config.yaml must load where the JSON file is gone (eval, serve, another machine)."""
    ds_path = write_json(tmp_path / "ds.json", {**AUTO, "zero_optimization": {"stage": 2}})
    cfg = load_config(tiny_config(train=TRAIN), ["train.strategy=deepspeed", f"train.deepspeed={ds_path}"])
    assert cfg.train.deepspeed == {**AUTO, "zero_optimization": {"stage": 2}}
    ds_path.unlink()
    again = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert again.train.deepspeed == cfg.train.deepspeed


def test_zero2_two_processes_match_one_process_and_resume(tiny_config, tmp_path):
    cfg_path = tiny_config(train=TRAIN)
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    ds_path = write_json(tmp_path / "zero2.json", {**AUTO, "zero_optimization": {"stage": 2}})
    run = single.run_dir.parent / "zero2"
    args = ["train.strategy=deepspeed", f"train.deepspeed={ds_path}", "name=zero2"]

    first = torchrun(cfg_path, *args, "train.max_steps=3")  # stops mid-run: the 6-step run's first half
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("report:") == 1  # rank 0 alone writes the report
    assert "built successfully" not in first.stdout + first.stderr  # DeepSpeed compiled no op
    ckpt = run / "checkpoints" / "step-000003"
    assert (run / "checkpoints" / "latest").read_text().strip() == ckpt.name
    # Each rank wrote its ZeRO shard into the same folder, which was renamed into place whole.
    shards = sorted(p.name for p in (ckpt / "deepspeed").glob("zero_pp_rank_*_optim_states.pt"))
    assert shards == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert (ckpt / "model.safetensors").is_file() and not (ckpt / "optimizer.pt").exists()
    resolved = json.loads((run / "deepspeed.json").read_text())
    assert resolved["gradient_accumulation_steps"] == 2 and resolved["train_micro_batch_size_per_gpu"] == 3

    resumed = torchrun(cfg_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_matches_one_process(single.run_dir, run)  # every step's loss, grad norm and lr; rank 1 logged nothing

    assert_same_final_model(single.run_dir, run)  # same weights as one process's, loadable, complete


def test_zero1_with_a_deepspeed_built_optimizer_matches_one_process(tiny_config, tmp_path):
    """An "optimizer" section of "auto" values: DeepSpeed builds the AdamW, tailor's scheduler drives it."""
    cfg_path = tiny_config(train=TRAIN)
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    ds_path = write_json(tmp_path / "zero1.json", {
        **AUTO, "zero_optimization": {"stage": 1},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}})
    result = torchrun(cfg_path, "train.strategy=deepspeed", f"train.deepspeed={ds_path}", "name=zero1")
    assert result.returncode == 0, result.stderr[-3000:]
    run = single.run_dir.parent / "zero1"
    assert_matches_one_process(single.run_dir, run)
    assert json.loads((run / "deepspeed.json").read_text())["optimizer"]["params"]["torch_adam"] is True


def cli(*args):
    """`tailor ...` in a fresh process: DeepSpeed in one process sets up a process group that outlives the run."""
    return tailor_cli(*args, timeout=300)


def test_zero0_in_one_process_matches_plain_and_checkpoints_keep_their_strategy(tiny_config, tmp_path, capsys):
    cfg_path = tiny_config(train={**TRAIN, "max_steps": 3})
    single = load_config(cfg_path, ["name=single"])
    train_job(single)
    ds_path = write_json(tmp_path / "zero0.json", {"zero_optimization": {"stage": 0}})
    result = cli("train", cfg_path, "name=zero0", "train.strategy=deepspeed", f"train.deepspeed={ds_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    one, ds = by_split(single.run_dir, "train"), by_split(single.run_dir.parent / "zero0", "train")
    assert [r["step"] for r in ds] == [1, 2, 3]
    for a, b in zip(one, ds):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # taken by tailor: stage 0 keeps none
    # A DeepSpeed checkpoint cannot be resumed without DeepSpeed, nor a plain one with it.
    assert main(["train", str(cfg_path), "name=zero0", "--resume", "train.max_steps=4"]) == 2
    assert "written with train.strategy deepspeed" in capsys.readouterr().err
    result = cli("train", cfg_path, "name=single", "--resume", "train.max_steps=4", "train.strategy=deepspeed",
                 f"train.deepspeed={ds_path}")
    assert result.returncode == 2 and "was not written with train.strategy deepspeed" in result.stderr
