"""Tiny random models of each family GGUF export supports, with tokenizers using each llama.cpp split."""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tiny import CHATML, SPECIAL, corpus

# A stress text for pre-tokenizers (llama.cpp's converter hashes how a tokenizer splits it): whitespace runs,
# emoji, digit runs, CJK, Cyrillic, repeated punctuation and contractions in both cases.
SPLIT_TEXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
              "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
              "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
              "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL")


# Pre-tokenizer splits, as a tokenizer.json spells them, and the name llama.cpp knows each by.
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def pre_tokenizer(kind: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if kind == "gpt-2":
        return byte_level
    if kind == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    split = {"qwen2": QWEN2_SPLIT, "llama-bpe": LLAMA3_SPLIT}[kind]
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def make_tokenizer(kind: str = "gpt-2", template: str = CHATML, eos: str = "<|im_end|>") -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the test assets (and the stress text) with the given pre-tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus() + [SPLIT_TEXT], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>", bos_token="<|endoftext|>",
                                   unk_token=None)
    fast.chat_template = template
    return fast


# Each family with the pre-tokenizer its real models use (GPT-2's tiny model gets SmolLM's digit split
# so that all three llama.cpp splits the families need are run).
FAMILY_SPLITS = {"llama": "gpt-2", "qwen2": "qwen2", "gpt2": "smollm"}


def make_model(family: str, tokenizer, seed: int = 0, hidden: int = 64, tied: bool = True):
    """A random 2-layer model of `family`, with lively weights: a large init spread gives logits whose
    top two differ clearly, so greedy decoding is not decided by rounding (near-ties)."""
    from transformers import (GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tied, **ids)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=2, n_head=4,
                                           n_positions=256, tie_word_embeddings=tied, **ids))
    else:
        raise ValueError(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 1:  # norm scales around 1
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.5 if p.dim() == 2 else 0.1)
    return model.eval()
