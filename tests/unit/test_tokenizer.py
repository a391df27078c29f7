import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnigpt.data.text import builtin_documents
from omnigpt.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError

BYTE = Tokenizer.byte_level()
BPE = Tokenizer.train_bpe(builtin_documents()[:30], vocab_size=600)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_unicode_round_trips(text):
    for tok in (BYTE, BPE):
        assert tok.decode(tok.encode(text)) == text


def test_byte_ids_are_byte_values_and_specials_follow():
    assert BYTE.encode("A\u00e9") == [65, 0xC3, 0xA9]
    assert BYTE.vocab_size == 256 + len(SPECIAL_TOKENS)
    assert min(BYTE.token_id(t) for t in SPECIAL_TOKENS) == 256


def test_bpe_compresses_and_keeps_placeholders_whole():
    text = "The import statement <image> and <audio> here"
    ids = BPE.encode(text)
    assert len(ids) < len(text.encode()) / 1.5
    assert BPE.image_id in ids and BPE.audio_id in ids
    assert BPE.vocab_size == 600


def test_bpe_learns_no_merges_across_special_tokens_in_its_texts():
    texts = ["<image><image> caption: a red star<|eos|>", "<audio> transcript: one two<|eos|>"] * 40
    tok = Tokenizer.train_bpe(texts, vocab_size=300)
    learned = [t for t in tok.backend.get_vocab() if t not in SPECIAL_TOKENS and len(t) > 1]
    assert not [t for t in learned if "<" in t or ">" in t or "|" in t], learned
    assert [tok.decode([i]) for i in tok.encode("<image> caption: a red star")] == \
        ["<image>", " caption", ":", " a", " red", " star"]


def test_captions_from_files_teach_the_caption_prompt_as_one_word(tmp_path):
    """A manifest's rows teach the BPE as their tokens run, so ` caption` after the image is one token."""
    from pathlib import Path

    from omnigpt.data.builtin import scenes as builtin_scenes
    from omnigpt.data.examples import FileExamples
    from omnigpt.data.prompts import CAPTION_PROMPT, vqa_prompt
    from omnigpt.data.sources import ImageText

    rows = [ImageText(Path(f"{i}.png"), s.caption) for i, s in enumerate(builtin_scenes.scenes("train", 60))]
    rows += [ImageText(Path("q.png"), q.answer, question=q.question) for s in builtin_scenes.scenes("train", 60)
             for q in s.qas]
    tok = Tokenizer.train_bpe(FileExamples(rows).texts(), vocab_size=600)
    assert [tok.decode([i]) for i in tok.encode(CAPTION_PROMPT)] == ["<image>", " caption", ":"]
    assert [tok.decode([i]) for i in tok.encode(vqa_prompt("how many objects?"))][:2] == ["question", ":"]


def test_save_and_load_give_the_same_tokenizer(tmp_path):
    path = BPE.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    again = Tokenizer.load(tmp_path / "tok")
    assert again.kind == "bpe" and again.encode("def f(x): return x") == BPE.encode("def f(x): return x")
    assert Tokenizer.load(BYTE.save(tmp_path / "b.json")).kind == "byte"


def test_bad_tokenizer_file_is_named(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer.json: not a readable tokenizer.json"):
        Tokenizer.load(bad)
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        Tokenizer.load(tmp_path / "missing.json")


def test_stream_decoding_waits_for_whole_characters():
    ids = BYTE.encode("naïve 🙂")
    pieces = list(BYTE.decode_stream(ids))
    assert "".join(pieces) == "naïve 🙂"
    assert all("\ufffd" not in p for p in pieces)
