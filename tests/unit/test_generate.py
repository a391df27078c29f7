import itertools

import pytest
import torch

from conftest import tiny_asr_config
from omnigpt import GPT, GenerationConfig, ModelConfig, Tokenizer, generate, load_checkpoint, stream, train
from omnigpt.data.builtin import speech
from omnigpt.generate import (GenerationError, PromptTooLongError, apply_repetition_penalty, beam_search_ids,
                              filter_top_k, filter_top_p, sample_ids)

TOK = Tokenizer.byte_level()
TEXT = "abcdefghij " * 200


@pytest.fixture(scope="module")
def trained():
    """A tiny GPT that has learned to continue 'abcdefghij ' (a few seconds of training)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=48,
                            position="rope"))
    data = torch.tensor(TOK.encode(TEXT))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        starts = torch.randint(0, len(data) - 33, (16,))
        batch = torch.stack([data[s:s + 33] for s in starts])
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2
    return model.eval()


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(1)
    return GPT(ModelConfig(vocab_size=TOK.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)).eval()


def test_greedy_continues_the_pattern(trained):
    assert generate(trained, TOK, "abcd", max_new_tokens=12) == "efghij abcde"


def test_stop_strings_and_stop_tokens(trained):
    assert generate(trained, TOK, "abcd", max_new_tokens=12, stop_strings=["hi"]) == "efg"
    assert generate(trained, TOK, "abcd", max_new_tokens=12, stop_tokens=[ord(" ")]) == "efghij"


def test_batched_prompts_of_different_lengths_match_single_prompts(random_model):
    prompts = ["a", "hello there, general", "xyz 123"]
    batched = generate(random_model, TOK, prompts, max_new_tokens=8)
    single = [generate(random_model, TOK, p, max_new_tokens=8) for p in prompts]
    assert batched == single


def test_same_seed_same_text_other_seed_other_text(random_model):
    a = generate(random_model, TOK, "Once", max_new_tokens=20, temperature=1.0, seed=3)
    b = generate(random_model, TOK, "Once", max_new_tokens=20, temperature=1.0, seed=3)
    c = generate(random_model, TOK, "Once", max_new_tokens=20, temperature=1.0, seed=4)
    assert a == b and a != c


def test_stream_pieces_join_to_the_generated_text(random_model, trained):
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=50, seed=11)
    assert "".join(stream(random_model, TOK, "Hi", **kw)) == generate(random_model, TOK, "Hi", **kw)
    pieces = list(stream(trained, TOK, "abcd", max_new_tokens=12, stop_strings=["hi"]))
    assert "".join(pieces) == "efg"


def test_top_k_of_one_is_greedy(random_model):
    greedy = generate(random_model, TOK, "abc", max_new_tokens=10)
    assert generate(random_model, TOK, "abc", max_new_tokens=10, temperature=1.5, top_k=1, seed=5) == greedy


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(filter_top_p(logits, 0.75))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_top_k(logits, 3)).sum() == 3


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 1.0]]


def test_strong_repetition_penalty_never_repeats_a_token(random_model):
    ids = TOK.encode("abc")

    def run(penalty):
        cfg = GenerationConfig(max_new_tokens=30, repetition_penalty=penalty)
        return [int(t) for t in sample_ids(random_model, [ids], cfg, stop_ids=[], pad_id=TOK.pad_id)]

    assert len(set(run(1.0))) < 30  # without a penalty this model repeats itself
    out = run(1e6)
    assert len(out) == 30 and len(set(out)) == 30 and not set(out) & set(ids)


def test_beam_search_finds_the_most_likely_sequence():
    torch.manual_seed(4)  # a model on which greedy decoding misses the most likely sequence
    model = GPT(ModelConfig(vocab_size=6, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        model.wte.weight.mul_(3)
    prompt, n = [1, 2], 3

    def logprob(seq):
        ids = torch.tensor([prompt + list(seq)])
        logp = model(ids)[0].log_softmax(-1)[0]
        return sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(seq))

    with torch.no_grad():
        best = max(itertools.product(range(6), repeat=n), key=logprob)
        greedy = generate_ids_greedy(model, prompt, n)
        assert tuple(greedy) != best  # the search has something to find
        cfg = GenerationConfig(max_new_tokens=n, num_beams=36, length_penalty=0.0)
        found = beam_search_ids(model, prompt, cfg, stop_ids=[])
        greedy_cfg = GenerationConfig(max_new_tokens=n, num_beams=2, length_penalty=0.0)
        two = beam_search_ids(model, prompt, greedy_cfg, stop_ids=[])
        assert tuple(found) == best
        assert logprob(two) <= logprob(found)


def generate_ids_greedy(model, prompt, n):
    cfg = GenerationConfig(max_new_tokens=n)
    return [int(t) for t in sample_ids(model, [prompt], cfg, stop_ids=[], pad_id=0)]


def test_beam_search_through_the_text_api(trained):
    assert generate(trained, TOK, "abcd", max_new_tokens=6, num_beams=4) == "efghij"


def test_prompt_longer_than_context(random_model):
    long = "x" * 60
    with pytest.raises(PromptTooLongError, match="prompt of 60 tokens \\+ max_new_tokens 10 exceeds the "
                                                  "model's context of 64 tokens"):
        generate(random_model, TOK, long, max_new_tokens=10)
    fits = "x" * 55  # 55 + 10 - 1 = 64: the last new token is never fed back, so this fits exactly
    assert len(TOK.encode(fits + generate(random_model, TOK, fits, max_new_tokens=10, stop_tokens=[]))) >= 64
    kept = "abc" + "y" * 54  # truncation keeps the newest 55 tokens
    assert generate(random_model, TOK, kept, max_new_tokens=10, truncate=True) == \
        generate(random_model, TOK, kept[-55:], max_new_tokens=10)
    with pytest.raises(PromptTooLongError, match="max_new_tokens 70 leaves no room"):
        generate(random_model, TOK, "a", max_new_tokens=70, truncate=True)


def test_bad_generation_settings_are_named(random_model):
    with pytest.raises(ValueError, match="top_p must be in"):
        generate(random_model, TOK, "a", top_p=1.5)
    with pytest.raises(ValueError, match="streaming needs num_beams = 1"):
        list(stream(random_model, TOK, "a", num_beams=2))


def test_audio_prompts_are_checked(tmp_path, speech_cache):
    train(tiny_asr_config(speech_cache, max_steps=1), tmp_path / "asr", progress=False)
    ck = load_checkpoint(tmp_path / "asr")
    clip = speech.speech_dataset("train", 8, 0, speech_cache).audio(0)
    with pytest.raises(GenerationError, match=r"1 <audio> placeholder\(s\) but 2 audio clip\(s\)"):
        generate(ck.model, ck.tokenizer, "<audio> transcript:", audio=[clip, clip], max_new_tokens=2)
    with pytest.raises(GenerationError, match="one audio clip .* per prompt"):
        generate(ck.model, ck.tokenizer, ["<audio> a", "<audio> b"], audio=clip, max_new_tokens=2)
    alone = generate(ck.model, ck.tokenizer, "<audio> transcript:", audio=clip, max_new_tokens=4)
    short = speech.speech_dataset("train", 8, 0, speech_cache).audio(1)
    batched = generate(ck.model, ck.tokenizer, ["<audio> transcript:"] * 2, audio=[clip, short], max_new_tokens=4)
    assert batched[0] == alone
