"""Running a shared prefix once gives the loss and gradients of the plain forward."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import tailor.models.prefix as prefix
from tailor.train.loss import token_stats


def shared_batch(padded: bool, shared: int = 20) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    ids = torch.randint(5, 500, (3, 30))
    ids[:, :shared] = torch.randint(5, 500, (shared,))  # a "system prompt" every row begins with
    labels = ids.clone()
    labels[:, :24] = -100
    labels[0, 10] = ids[0, 10]  # a supervised position inside the shared prefix is scored too
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    if padded:
        batch["attention_mask"][1, 27:] = 0
        batch["attention_mask"][2, 22:] = 0
        batch["labels"] = labels.masked_fill(batch["attention_mask"] == 0, -100)
    return batch


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    nll, n, correct = token_stats(model, batch)
    (nll / n).backward()
    return float(nll) / n, n, correct, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def compare(model, batch, monkeypatch):
    passes = []
    original = prefix.hidden_states

    def count_passes(backbone, b, known=None):
        hook = backbone.register_forward_hook(lambda *a: passes.append(1))
        try:
            return original(backbone, b, known)
        finally:
            hook.remove()

    monkeypatch.setattr("tailor.train.loss.hidden_states", count_passes)
    got = loss_and_grads(model, batch)
    assert len(passes) == 2  # the prefix pass, then the rest of the rows
    monkeypatch.setattr(prefix, "MIN_SHARED", 10**6)
    passes.clear()
    want = loss_and_grads(model, batch)
    assert len(passes) == 1
    assert got[0] == pytest.approx(want[0], rel=1e-5)
    assert got[1:3] == want[1:3]
    assert got[3].keys() == want[3].keys()
    for name, grad in want[3].items():
        torch.testing.assert_close(got[3][name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("padded", [False, True])
def test_shared_prefix_matches_the_plain_forward_on_llama(tiny_model, padded, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").train()
    compare(model, shared_batch(padded), monkeypatch)


def test_shared_prefix_matches_the_plain_forward_on_gpt2(monkeypatch):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=500, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    compare(GPT2LMHeadModel(config).train(), shared_batch(padded=True), monkeypatch)


def test_no_sharing_under_dropout_for_short_prefixes_or_single_rows(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").train()
    batch = shared_batch(padded=False)
    backbone = model.model
    assert prefix.worth_sharing(backbone, batch) == 20
    assert prefix.worth_sharing(backbone, shared_batch(padded=False, shared=8)) == 0
    assert prefix.worth_sharing(backbone, {k: v[:1] for k, v in batch.items()}) == 0
    model.config.attention_dropout = 0.1  # rows would share one dropout mask on the prefix
    assert prefix.worth_sharing(backbone, batch) == 0
    model.eval()  # no dropout at inference
    assert prefix.worth_sharing(backbone, batch) == 20
    # Off the CPU the batch runs whole (a GPU waits on the host's launches: a second pass doubles them). The
    # meta device stands in for a GPU; its tensors have no values, so the answer must come before any is read.
    assert prefix.worth_sharing(backbone, {k: v.to("meta") for k, v in batch.items()}) == 0


def test_gradient_checkpointing_runs_the_batch_whole_with_the_same_loss_and_gradients(tiny_model):
    # transformers turns the cache off under checkpointing, so the prefix's keys/values would be missing.
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").train()
    batch = shared_batch(padded=True)
    want = loss_and_grads(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert prefix.worth_sharing(model.model, batch) == 0
    got = loss_and_grads(model, batch)
    assert got[0] == pytest.approx(want[0], rel=1e-5) and got[1:3] == want[1:3]
    for name, grad in want[3].items():
        torch.testing.assert_close(got[3][name], grad, rtol=1e-4, atol=1e-6, msg=name)
    model.eval()  # scoring: no checkpointing, the prefix is shared again
    assert prefix.worth_sharing(model.model, batch) == 20


def test_scoring_keeps_a_prefix_across_batches_and_gets_the_same_figures(tiny_model, monkeypatch):
    from tailor.eval.score import score

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    torch.manual_seed(3)
    system = torch.randint(5, 500, (20,)).tolist()  # every sample begins with it; the rest differs
    samples = []
    for n in range(12):
        ids = system + torch.randint(5, 500, (6 + n,)).tolist()
        samples.append({"input_ids": ids, "labels": [-100] * 22 + ids[22:]})
    prefixes = []
    original = prefix.run_prefix

    def spy(backbone, ids, known):
        prefixes.append(tuple(ids[0].tolist()) in known)  # True: this batch reuses a kept prefix
        return original(backbone, ids, known)

    monkeypatch.setattr(prefix, "run_prefix", spy)
    got = score(model, samples, pad_id=0, batch_size=3)
    assert prefixes == [False, True, True, True]  # 4 batches, one prefix pass
    monkeypatch.setattr(prefix, "MIN_SHARED", 10**6)
    want = score(model, samples, pad_id=0, batch_size=3)
    assert got["tokens"] == want["tokens"] and got["token_accuracy"] == want["token_accuracy"]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_a_kept_prefix_is_refused_with_gradients(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa")
    with pytest.raises(ValueError, match="without gradients"):
        prefix.hidden_states(model.model, shared_batch(padded=False), known={})
