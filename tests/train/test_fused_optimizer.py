"""The loop's fused AdamW makes the updates the reference (foreach) AdamW makes."""

import torch
from transformers import AutoModelForCausalLM

from tailor.train.loop import make_optimizer


def test_fused_adamw_steps_like_foreach_adamw_with_the_same_groups(tiny_model):
    ours, ref = (AutoModelForCausalLM.from_pretrained(tiny_model) for _ in range(2))
    opt = make_optimizer(ours, lr=1e-2, weight_decay=0.1, betas=[0.9, 0.95])
    assert all(g["fused"] for g in opt.param_groups)
    decay = [p for p in ref.parameters() if p.ndim >= 2]
    no_decay = [p for p in ref.parameters() if p.ndim < 2]
    ref_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-2, betas=(0.9, 0.95), foreach=True)
    ids = torch.randint(0, 100, (2, 10))
    for _ in range(3):
        for model, o in ((ours, opt), (ref, ref_opt)):
            model(input_ids=ids, labels=ids).loss.backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = sum(float((a - b).detach().abs().sum()) for a, b in zip(ours.parameters(), AutoModelForCausalLM.from_pretrained(tiny_model).parameters()))
    assert moved > 0
