"""Tiny random models and tokenizers built on the spot, so tests need no network and no big files."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
ASSETS = Path(__file__).parent / "assets"


def corpus() -> list[str]:
    text = []
    for f in sorted(ASSETS.glob("*")):
        if f.is_file():
            text += f.read_text(encoding="utf-8", errors="ignore").splitlines()
    return text + ["system user assistant the a of and to in is you that it hello how are"]


def make_tokenizer(folder: Path, vocab_size: int = 600, chat: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the test assets: with ChatML's special tokens and template (an instruct
    model's), or without either, ending texts with <|endoftext|> (a GPT-2-style base model's)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = SPECIAL if chat else ["<|endoftext|>", "<pad>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>" if chat else "<|endoftext|>",
                                   pad_token="<pad>", bos_token="<|endoftext|>", unk_token=None)
    if chat:
        fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def make_causal_lm(folder: Path, layers: int = 2, hidden: int = 32, context: int = 256, seed: int = 0) -> Path:
    """A random 2-layer Llama with the tiny tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_seq2seq(folder: Path, family: str = "t5", hidden: int = 32, seed: int = 0) -> Path:
    """A random 1+1-layer encoder-decoder (t5, bart or marian) with the tiny tokenizer, saved as a folder."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration, MarianConfig, MarianMTModel, T5Config, T5ForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if family == "t5":
        config = T5Config(vocab_size=len(tok), d_model=hidden, d_kv=8, d_ff=hidden * 2, num_layers=1, num_decoder_layers=1,
                          num_heads=4, decoder_start_token_id=tok.pad_token_id, **ids)
        model = T5ForConditionalGeneration(config)
    elif family == "bart":
        config = BartConfig(vocab_size=len(tok), d_model=hidden, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=hidden * 2, decoder_ffn_dim=hidden * 2,
                            max_position_embeddings=256, decoder_start_token_id=tok.eos_token_id,
                            bos_token_id=tok.bos_token_id, forced_bos_token_id=None, forced_eos_token_id=None, **ids)
        model = BartForConditionalGeneration(config)
    elif family == "marian":
        config = MarianConfig(vocab_size=len(tok), d_model=hidden, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                              decoder_attention_heads=4, encoder_ffn_dim=hidden * 2, decoder_ffn_dim=hidden * 2,
                              max_position_embeddings=256, decoder_start_token_id=tok.pad_token_id,
                              decoder_vocab_size=len(tok), **ids)
        model = MarianMTModel(config)
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    return folder


def make_classifier(folder: Path, labels: tuple[str, ...] = ("negative", "positive"), hidden: int = 32, seed: int = 0) -> Path:
    """A random 2-layer LlamaForSequenceClassification with the tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
    )
    LlamaForSequenceClassification(config).save_pretrained(folder)
    return folder


# Tiny random models of every family tailor supports, built from each family's config (2 layers, hidden 32).
CAUSAL = ("gpt2", "llama", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "mistral")
ENCODERS = ("bert", "roberta", "distilbert")
SEQ2SEQ = ("t5", "bart", "marian")


def family_config(family: str, tok, hidden: int = 32, layers: int = 2):
    """A transformers config for a tiny model of `family` over the tiny tokenizer's vocabulary."""
    from transformers import AutoConfig

    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    heads = dict(num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=layers, hidden_size=hidden,
                 intermediate_size=hidden * 2, max_position_embeddings=256, vocab_size=len(tok))
    if family == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=4,
                                    n_positions=256, **ids)
    if family in ("llama", "qwen2", "qwen3", "mistral", "phi3"):
        extra = {"head_dim": 8} if family == "qwen3" else {}
        return AutoConfig.for_model(family, tie_word_embeddings=True, **heads, **extra, **ids)
    if family in ("gemma", "gemma2"):
        extra = {"sliding_window": 64} if family == "gemma2" else {}
        return AutoConfig.for_model(family, head_dim=8, **heads, **extra, **ids)
    if family == "bert":
        return AutoConfig.for_model("bert", vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=4, intermediate_size=hidden * 2, max_position_embeddings=256,
                                    pad_token_id=tok.pad_token_id)
    if family == "roberta":
        return AutoConfig.for_model("roberta", vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                    num_attention_heads=4, intermediate_size=hidden * 2, max_position_embeddings=260,
                                    **ids)
    if family == "distilbert":
        return AutoConfig.for_model("distilbert", vocab_size=len(tok), dim=hidden, n_layers=layers, n_heads=4,
                                    hidden_dim=hidden * 2, max_position_embeddings=256, pad_token_id=tok.pad_token_id)
    raise ValueError(family)


def make_family(folder: Path, family: str, chat_template: bool = True, seed: int = 0) -> Path:
    """A tiny random model of `family` with the tiny tokenizer, saved as a Hugging Face folder: a causal LM, an
    encoder with its masked-LM head, or an encoder-decoder. chat_template=False: a base model's tokenizer
    (no ChatML tokens, no template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    if family in SEQ2SEQ:
        return make_seq2seq(folder, family, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder, chat=chat_template)
    torch.manual_seed(seed)
    config = family_config(family, tok)
    model_class = AutoModelForMaskedLM if family in ENCODERS else AutoModelForCausalLM
    model_class.from_config(config).save_pretrained(folder)
    return folder
