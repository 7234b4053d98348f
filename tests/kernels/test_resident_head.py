"""The resident LM head gives autocast's loss and gradients, and follows the weight after each step."""

import torch
from transformers import AutoModelForCausalLM

from tailor.data.batches import collate
from tailor.train import loss as loss_module
from tailor.train.loop import make_optimizer
from tailor.train.loss import token_stats
from tailor.kernels.embedding import sparse_tied_gradient
from tailor.kernels.head import output_head, resident_head


def batch_of(model, seed):
    torch.manual_seed(seed)
    ids = torch.randint(4, model.config.vocab_size, (3, 12))
    return collate([{"input_ids": r.tolist(), "labels": [-100] * 4 + r[4:].tolist()} for r in ids], pad_id=0)


def train_steps(model, resident: bool, steps=3):
    optimizer = make_optimizer(model, 1e-2, 0.0, [0.9, 0.999])
    losses, grads = [], []
    with resident_head(model, optimizer, enabled=resident):
        assert hasattr(output_head(model), "_tailor_resident") == resident
        for step in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16), sparse_tied_gradient(model):
                nll, n, _ = token_stats(model, batch_of(model, step))
            (nll / n).backward()
            losses.append(float(nll))
            grads.append(model.get_input_embeddings().weight.grad.clone())
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert not hasattr(output_head(model), "_tailor_resident")
    return losses, grads


def test_resident_head_trains_as_autocast_does(tiny_model):
    plain, resident = (AutoModelForCausalLM.from_pretrained(tiny_model) for _ in range(2))
    want_losses, want_grads = train_steps(plain, False)
    got_losses, got_grads = train_steps(resident, True)
    # The head's and the embedding's parts are summed in another order (fp32 ulps). Steps 2 and 3 use
    # the weights the optimizer made: a stale bf16 copy would part by far more than that.
    assert got_losses[0] == want_losses[0]
    torch.testing.assert_close(got_losses, want_losses, rtol=2e-4, atol=0)  # stale: 2e-3 at step 2
    torch.testing.assert_close(got_grads[0], want_grads[0], rtol=1e-4, atol=1e-6)  # from the same weights
    assert all(g.abs().sum() > 0 for g in got_grads)


def test_without_autocast_or_grad_the_head_is_the_module(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    optimizer = make_optimizer(model, 1e-2, 0.0, [0.9, 0.999])
    with resident_head(model, optimizer), torch.no_grad():
        nll, n, _ = token_stats(model, batch_of(model, 0))
    want, _, _ = token_stats(model, batch_of(model, 0))
    assert float(nll) == float(want)


def test_chunks_add_their_parts_in_fp32(tiny_model, monkeypatch):
    """Several head chunks per batch: each part rounds to bf16 once and they sum in fp32, close to one chunk."""
    whole = train_steps(AutoModelForCausalLM.from_pretrained(tiny_model), True, steps=1)[1][0]
    monkeypatch.setattr(loss_module, "CHUNK", 7)
    chunked = train_steps(AutoModelForCausalLM.from_pretrained(tiny_model), True, steps=1)[1][0]
    assert not torch.equal(whole, chunked)
    assert float((chunked - whole).norm() / whole.norm()) < 1e-2  # bf16 rounding of the parts, no more
