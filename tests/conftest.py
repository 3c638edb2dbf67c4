"""Shared test fixtures: small offline tokenizers for tiny random-init models."""

import pytest


@pytest.fixture(scope="session")
def make_bpe_tokenizer():
    """Factory of byte-level BPE tokenizers trained offline on a given corpus (no pad token)."""

    def build(corpus, vocab_size=300, eos="<eos>"):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import PreTrainedTokenizerFast

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator(corpus, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=eos)

    return build


@pytest.fixture(scope="module")
def tok():
    """Character-level tokenizer with <pad>/<bos>/<eos>, BOS prepended, left padding."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789 ?:.,":
        vocab[c] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")
