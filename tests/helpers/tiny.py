"""Tiny random Llama models with a shared byte-level BPE tokenizer, built in the tests."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The capital of France is Paris.",
    "# Query:\n````\nWhat is two plus two?\n````\n\n# Answer:\n````\nFour.\n````",
    "Below are conversations between a person and an assistant.",
]


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)  # a chat template of our own, for the tests of an aligned model's template


def make_tiny_llama(folder: Path, *, seed: int, init_range: float = 0.02, chat_template: str | None = None) -> Path:
    """A 2-layer Llama with random weights (``seed``) and a BPE tokenizer trained on a few lines.

    The tokenizer is trained identically every time, so models of different seeds share it.
    A larger ``init_range`` gives peakier distributions (no near-ties between logits).
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return save_tiny_llama(folder, fast.vocab_size, fast, seed=seed, init_range=init_range)


def save_tiny_llama(folder: Path, vocab_size: int, tokenizer, *, seed: int, init_range: float) -> Path:
    """A 2-layer Llama with random weights (``seed``) over ``tokenizer``'s ids, saved in ``folder``."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=init_range,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


SP_CORPUS = [
    "The other theme is there, and I think the bathe is in the theatre.",
    "In the end I told them that the weather was rather hot, the end.",
    "Is it the one? It is the other one, then the third.",
    "What is two plus two? Four. The capital of France is Paris.",
]

LLAMA2_CHAT_TEMPLATE = (  # a template of our own in Llama-2-chat's layout, with a default system message of our own
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set system_message = 'Be kind.\\nAnswer the question: it\\'s short.' %}{% endif %}"
    "{{ bos_token }}[INST] <<SYS>>\n{{ system_message }}\n<</SYS>>\n\n{{ messages[-1]['content'] }} [/INST]"
)


def llama_style_tokenizer(folder: Path):
    """A tokenizer built as Llama-2's is (SentencePiece-style "▁" pieces, byte fallback, BOS added, "▁" stripped
    from the start of a decoded text), trained on SP_CORPUS: ``▁the`` and ``the`` both decode alone to "the", the
    byte token ``<0x49>`` and the piece ``I`` both to "I" — the collisions AlignTDS's text matching meets."""
    import json

    import transformers
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

    def shaped(tokenizer: Tokenizer) -> Tokenizer:
        tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tokenizer.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        return tokenizer

    trained = shaped(Tokenizer(models.BPE(unk_token="<unk>")))
    trained.train_from_iterator(SP_CORPUS * 20, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    model = json.loads(trained.to_str())["model"]
    vocab = dict(model["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = shaped(Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True)))
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return fast


def make_tiny_llama_sp(folder: Path, *, seed: int, chat_template: str | None = None) -> Path:
    """A 2-layer random Llama (``seed``) over :func:`llama_style_tokenizer`; ``chat_template`` saved with it."""
    fast = llama_style_tokenizer(folder)
    if chat_template:
        fast.chat_template = chat_template
        fast.save_pretrained(folder)
    return save_tiny_llama(folder, len(fast), fast, seed=seed, init_range=0.3)
