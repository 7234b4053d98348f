"""The tied embedding's sparse gradient adds up to the dense one, and stays dense for the optimizer."""

import torch
from transformers import AutoModelForCausalLM

from tailor.data.batches import collate
from tailor.train.loss import token_stats
from tailor.kernels.embedding import densify, sparse_tied_gradient, tied_embedding


def batch_of(model):
    torch.manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (3, 12))
    samples = [{"input_ids": row.tolist(), "labels": [-100] * 5 + row[5:].tolist()} for row in ids]
    return collate(samples, pad_id=0)


def test_sparse_tied_gradient_equals_the_dense_one(tiny_model):
    dense, sparse = (AutoModelForCausalLM.from_pretrained(tiny_model) for _ in range(2))
    embedding = tied_embedding(sparse)
    assert embedding is sparse.get_input_embeddings() and not embedding.sparse
    batch = batch_of(dense)
    token_stats(dense, batch)[0].backward()
    with sparse_tied_gradient(sparse):
        assert embedding.sparse
        nll = token_stats(sparse, batch)[0]
    assert not embedding.sparse  # switched back on leaving the block
    nll.backward()
    densify(sparse)
    grad = sparse.get_input_embeddings().weight.grad
    assert not grad.is_sparse  # the head's dense part took the sparse rows in
    want = dense.get_input_embeddings().weight.grad
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-7)
    used = torch.zeros(len(want), dtype=torch.bool)
    used[batch["input_ids"].flatten()] = True
    assert want[used].abs().sum() > 0 and want[~used].abs().sum() > 0  # both parts of the sum are there


def test_sparse_gradient_alone_is_made_dense(tiny_model):
    """With the head out of the loss, only the embedding's sparse rows arrive: densify makes them dense."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with sparse_tied_gradient(model):
        hidden = model.model(input_ids=batch_of(model)["input_ids"]).last_hidden_state
    hidden.sum().backward()
    weight = model.get_input_embeddings().weight
    assert weight.grad.is_sparse
    densify(model)
    assert not weight.grad.is_sparse and weight.grad.abs().sum() > 0


def test_untied_or_frozen_embeddings_stay_dense(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.get_input_embeddings().weight.requires_grad_(False)
    assert tied_embedding(model) is None
    untied = AutoModelForCausalLM.from_pretrained(tiny_model, tie_word_embeddings=False)
    assert tied_embedding(untied) is None
    with sparse_tied_gradient(untied):
        assert not untied.get_input_embeddings().sparse
