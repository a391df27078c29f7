"""Tokenizers in Hugging Face's format: omnigpt reads a pretrained tokenizer folder and gives the same ids as
`transformers.AutoTokenizer`, adds its own special tokens after the vocabulary, and writes tokenizer.json
files that `tokenizers` and `transformers` load as they are (tiny tokenizers trained here; nothing is
downloaded)."""
import pytest

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer as HFTokenizer  # noqa: E402
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

from omnigpt.tokenizer import SPECIAL_TOKENS, Tokenizer  # noqa: E402

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
         "敏捷的棕色狐狸跳过了懒狗。", "Emoji: 🦊🐶✨ and 👩‍💻.", "def add(a, b):\n    return a + b  # sum\n"]
SAMPLE = TEXTS + ["Grüße aus Köln, 你好世界 🙂", "for i in range(10):\n\tprint(i ** 2)", "  spaces   and\ttabs "]


def gpt2_style():
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                                eos_token="<|endoftext|>")


def llama_style():
    """A sentencepiece-like BPE: '▁' for spaces, byte fallback for characters it never saw."""
    tok = HFTokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    tok.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"]
                                                            + bytes_))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")


@pytest.mark.parametrize("make", [gpt2_style, llama_style])
def test_a_pretrained_tokenizer_gives_the_same_ids_as_autotokenizer(make, tmp_path):
    make().save_pretrained(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = Tokenizer.load(tmp_path)
    for text in SAMPLE:
        assert ours.encode(text) == theirs.encode(text, add_special_tokens=False), text
        assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text, add_special_tokens=False))
    assert ours.eos_id == theirs.eos_token_id and ours.bos_id == theirs.bos_token_id
    n = len(theirs)
    assert sorted([ours.pad_id, ours.image_id, ours.audio_id]) == list(range(n, n + 3))  # appended
    assert ours.encode("a <image> b").count(ours.image_id) == 1


def test_omnigpt_tokenizer_files_load_in_tokenizers_and_transformers(tmp_path):
    ours = Tokenizer.train_bpe(TEXTS * 10, vocab_size=350)
    ours.save(tmp_path)
    backend = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLE:
        assert backend.encode(text).ids == ours.encode(text) == auto.encode(text, add_special_tokens=False)
    assert auto.eos_token == SPECIAL_TOKENS[1] and auto.eos_token_id == ours.eos_id
    again = Tokenizer.load(tmp_path)
    assert again.kind == "bpe" and again.specials == ours.specials


def test_a_tokenizer_saved_by_an_earlier_omnigpt_still_loads(tmp_path):
    import json

    ours = Tokenizer.byte_level()
    data = json.loads(ours.backend.to_str())
    data["omnigpt_kind"] = "byte"  # the old format: the kind inside tokenizer.json, no side file
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    old = Tokenizer.load(tmp_path / "tokenizer.json")
    assert old.kind == "byte" and old.encode("héllo") == ours.encode("héllo") and old.eos_id == ours.eos_id
