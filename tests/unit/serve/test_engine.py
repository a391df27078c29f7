"""The serving engine: requests decoded together, joining and leaving while others run, give exactly what
each gives alone with `generate` (greedy, and sampled with a seed)."""
import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")

from conftest import tiny_omni_config  # noqa: E402
from omnigpt import Config, GPT, Tokenizer, generate  # noqa: E402
from omnigpt.generate import GenerationConfig, prepare_media, prepare_prompts  # noqa: E402
from omnigpt.model.omni import build_model  # noqa: E402
from omnigpt.serve.engine import CallCancelled, Delta, Engine, Failed, Finished, Job, Prompt, QueueFull  # noqa: E402

TOK = Tokenizer.byte_level()
PROMPTS = ["Hello there", "a", "The quick brown fox", "xyz xyz", "Once upon a time", "b c d e f g", "zz",
           "Pack my box"]


def scrambled(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights large enough that greedy text changes from token to token (an initialised model
    repeats one letter, which would hide a row reading another row's cache)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
        for layer in getattr(model, "cross", []):  # open the gates: images change the text
            layer.attn_gate.fill_(1.0)
            layer.ff_gate.fill_(1.0)
    return model.eval()


@pytest.fixture(scope="module")
def gpt():
    cfg = Config.from_dict({"model": {"vocab_size": 272, "block_size": 64, "n_layer": 2, "n_head": 4,
                                      "n_kv_head": 2, "n_embd": 32, "position": "rope"}})
    return scrambled(GPT(cfg.model))


class Answer:
    """A job's events gathered: text per choice, finish reasons, done when every choice finished."""

    def __init__(self, rows: int):
        self.texts, self.reasons = [""] * rows, [None] * rows
        self.finished = threading.Event()
        self.on_delta = lambda: None

    def __call__(self, event) -> None:
        if isinstance(event, Delta):
            self.texts[event.index] += event.text
            self.on_delta()
        elif isinstance(event, Finished):
            self.reasons[event.index] = event.reason
            if all(self.reasons):
                self.finished.set()
        elif isinstance(event, Failed):
            raise AssertionError(event.message)


def submit(engine: Engine, prompts: list[Prompt], n: int = 1, **config) -> tuple[Job, Answer]:
    answer = Answer(len(prompts) * n)
    job = Job(prompts, GenerationConfig(**config), answer, n=n)
    engine.submit(job)
    return job, answer


def idle(engine: Engine) -> bool:
    """Whether the engine empties its rows and queue (a row leaves just after its last event is sent)."""
    for _ in range(200):
        if engine.running == 0 and engine.waiting == 0:
            return True
        time.sleep(0.005)
    return False


def text_prompt(text: str) -> Prompt:
    return Prompt(TOK.encode(text))


def test_eight_requests_at_once_give_what_each_gives_alone(gpt):
    alone = [generate(gpt, TOK, p, max_new_tokens=20) for p in PROMPTS]
    engine = Engine(gpt, TOK, max_batch=8)
    try:
        with engine.hold():  # all eight start together...
            answers = [submit(engine, [text_prompt(p)], max_new_tokens=20)[1] for p in PROMPTS[:4]]
        for p in PROMPTS[4:]:  # ...or join while the others run
            answers.append(submit(engine, [text_prompt(p)], max_new_tokens=20)[1])
            time.sleep(0.002)
        assert all(a.finished.wait(30) for a in answers)
    finally:
        engine.close()
    assert [a.texts[0] for a in answers] == alone
    assert len(set(alone)) == len(alone) and len(set("".join(alone))) > 20  # varied text, not one letter


def test_rows_leave_early_without_disturbing_the_others(gpt):
    """Short requests finish and leave (the rows after them move up in the cache) mid-way through long ones."""
    lengths = [1, 20, 3, 20, 7, 2, 20, 5]
    alone = [generate(gpt, TOK, p, max_new_tokens=k) for p, k in zip(PROMPTS, lengths)]
    engine = Engine(gpt, TOK, max_batch=4)  # eight requests, four rows: the rest wait, then take freed rows
    try:
        answers = [submit(engine, [text_prompt(p)], max_new_tokens=k)[1] for p, k in zip(PROMPTS, lengths)]
        assert all(a.finished.wait(30) for a in answers)
        assert idle(engine)
    finally:
        engine.close()
    assert [a.texts[0] for a in answers] == alone
    assert [a.reasons[0] for a in answers] == ["length"] * 8


def test_choices_sample_with_seed_plus_their_index(gpt):
    cfg = dict(max_new_tokens=12, temperature=0.9, top_p=0.95, seed=11)
    engine = Engine(gpt, TOK, max_batch=8)
    try:
        _, answer = submit(engine, [text_prompt("Hello"), text_prompt("The")], n=2, **cfg)
        assert answer.finished.wait(30)
    finally:
        engine.close()
    expected = [generate(gpt, TOK, p, **{**cfg, "seed": 11 + i}) for p in ("Hello", "The") for i in range(2)]
    assert answer.texts == expected
    assert answer.texts[0] != answer.texts[1]


def test_stop_strings_end_a_row_and_are_not_sent(gpt):
    full = generate(gpt, TOK, "Hello there", max_new_tokens=20)
    stop = full[6:8]
    engine = Engine(gpt, TOK)
    try:
        _, answer = submit(engine, [text_prompt("Hello there")], max_new_tokens=20, stop_strings=[stop])
        assert answer.finished.wait(30)
    finally:
        engine.close()
    assert answer.texts == [generate(gpt, TOK, "Hello there", max_new_tokens=20, stop_strings=[stop])]
    assert answer.texts[0] == full[:full.find(stop)] and answer.reasons == ["stop"]


def test_a_cancelled_request_leaves_and_a_full_queue_refuses(gpt):
    engine = Engine(gpt, TOK, max_batch=1, max_queue=0)
    try:
        with engine.hold():
            first, gone = submit(engine, [text_prompt("Hello")], max_new_tokens=40)
            with pytest.raises(QueueFull):
                submit(engine, [text_prompt("a")])
            first.cancel()
        _, answer = submit(engine, [text_prompt("a")], max_new_tokens=5)
        assert answer.finished.wait(30)
        assert idle(engine) and not gone.finished.is_set()
        with pytest.raises(ValueError, match="max_batch"):
            submit(engine, [text_prompt("a")], n=2)
    finally:
        engine.close()


def test_max_queue_counts_only_requests_without_a_free_row(gpt):
    """max_queue 0 means no waiting, not no serving: requests that find free rows start."""
    engine = Engine(gpt, TOK, max_batch=2, max_queue=0)
    try:
        with engine.hold():
            answers = [submit(engine, [text_prompt(t)], max_new_tokens=5)[1] for t in ("Hello", "a")]
            with pytest.raises(QueueFull):
                submit(engine, [text_prompt("b")])
        assert all(a.finished.wait(30) for a in answers)
    finally:
        engine.close()
    assert [a.texts[0] for a in answers] == [generate(gpt, TOK, t, max_new_tokens=5) for t in ("Hello", "a")]


def test_a_running_request_cancelled_stops_at_the_next_step(gpt):
    engine = Engine(gpt, TOK)
    try:
        with engine.hold():  # the callback is in place before the first step (else a busy CPU races it)
            job, answer = submit(engine, [text_prompt("Hello")], max_new_tokens=40)
            answer.on_delta = job.cancel  # the client goes away after the first piece of text
        assert idle(engine)  # a job being admitted counts as waiting until its prefill is done
    finally:
        engine.close()
    assert engine.cancelled == 1 and not answer.finished.is_set()
    assert len(answer.texts[0]) < len(generate(gpt, TOK, "Hello", max_new_tokens=40))


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_image_prompts_in_company_of_text_prompts(fusion):
    model = scrambled(build_model(tiny_omni_config(fusion), TOK.image_id, TOK.audio_id))
    torch.manual_seed(1)
    pictures = [torch.randn(3, 32, 32) for _ in range(2)]
    asks = [("<image> caption:", [pictures[0]]), ("plain text", []), ("<image> what?", [pictures[1]]),
            ("<image> caption:", [pictures[1]])]
    alone = [generate(model, TOK, text, images=images or None, max_new_tokens=12) for text, images in asks]
    engine = Engine(model, TOK, max_batch=4)
    try:
        with engine.hold():
            answers = []
            for text, images in asks:
                (ids,) = prepare_prompts(model, TOK, [text], GenerationConfig(max_new_tokens=12))
                answers.append(submit(engine, [Prompt(ids, prepare_media(model, [images]))], max_new_tokens=12)[1])
        assert all(a.finished.wait(30) for a in answers)
    finally:
        engine.close()
    assert [a.texts[0] for a in answers] == alone
    assert alone[0] != alone[3]  # the image is read


def test_a_call_runs_in_the_engine_thread_between_steps(gpt):
    """Work that uses the model (a transcription) never runs while a decoding step does: it runs in the
    engine's thread, waits in its queue, and the rows decoding meanwhile give generate's text. (The model
    is not safe to run from two threads at once: its rotary tables are cached on it. So `generate` runs here
    only while the engine is idle.)"""
    alone = generate(gpt, TOK, "Hello there", max_new_tokens=20)
    other = generate(gpt, TOK, "a", max_new_tokens=5)
    engine = Engine(gpt, TOK, max_batch=2, max_queue=0)
    try:
        with engine.hold():
            _, answer = submit(engine, [text_prompt("Hello there")], max_new_tokens=20)
            future = engine.call(lambda: (threading.current_thread().name, generate(gpt, TOK, "a", max_new_tokens=5)))
            assert engine.waiting == 2 and not future.done()
            with pytest.raises(QueueFull):
                engine.call(lambda: None)
        assert future.result(30) == ("omnigpt-engine", other)
        assert answer.finished.wait(30) and answer.texts == [alone]
        failing = engine.call(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(30)
        with engine.hold():
            dropped = engine.call(lambda: None)
            assert dropped.cancel()  # its client went away before it started
        assert idle(engine) and engine.cancelled == 1
    finally:
        engine.close()


def test_a_long_call_runs_a_piece_per_step_while_rows_decode(gpt):
    """A generator call (a transcription, window batch by window batch) takes one piece per step: the running
    rows go on decoding between its pieces, and both give what they give alone."""
    alone = generate(gpt, TOK, "Hello there", max_new_tokens=20)
    engine = Engine(gpt, TOK, max_batch=2)
    decoded = []

    def pieces():
        for i in range(6):
            decoded.append(len(answer.texts[0]))  # how much of the reply exists when this piece runs
            yield i
        return "transcript"

    try:
        with engine.hold():
            _, answer = submit(engine, [text_prompt("Hello there")], max_new_tokens=20)
            future = engine.call(pieces)
        assert future.result(30) == "transcript"
        assert answer.finished.wait(30)
    finally:
        engine.close()
    assert answer.texts == [alone]
    assert decoded == sorted(decoded) and len(set(decoded)) >= 5  # a decoding step between every two pieces


def test_a_long_call_whose_client_leaves_stops_at_its_next_piece(gpt):
    engine = Engine(gpt, TOK)
    ran, closed = [], threading.Event()

    def pieces():
        try:
            for i in range(1000):
                ran.append(i)
                if i == 2:
                    engine.cancel(future)  # the client goes away while it runs
                yield i
        finally:
            closed.set()

    try:
        with engine.hold():
            future = engine.call(pieces)
        with pytest.raises(CallCancelled):
            future.result(30)
        assert closed.is_set() and ran == [0, 1, 2] and idle(engine) and engine.cancelled == 1
    finally:
        engine.close()
