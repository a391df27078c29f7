"""GET /metrics: Prometheus text whose counters move with the requests served (a tiny random-weight GPT,
in-process, through the official `openai` client)."""
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from fastapi.testclient import TestClient  # noqa: E402

from omnigpt import Config, GPT, Tokenizer  # noqa: E402
from omnigpt.checkpoint import Checkpoint  # noqa: E402
from omnigpt.serve import create_app  # noqa: E402

KEY = "sk-test"
SAMPLE = re.compile(r'^([a-z_]+)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+]+)$')


def scrape(http) -> dict[str, float]:
    """Every sample of /metrics by its name and labels, checking each line is in the text format."""
    r = http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in r.text.splitlines():
        if line.startswith("# "):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        samples[line.rsplit(" ", 1)[0]] = float(match[4])
    return samples


def test_counters_move_with_the_requests():
    tok = Tokenizer.byte_level()
    cfg = Config.from_dict({"model": {"vocab_size": 272, "block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 16,
                                      "position": "rope"}})
    app = create_app(Checkpoint(Path("tiny"), cfg, GPT(cfg.model), tok, 0), api_key=KEY)
    with TestClient(app) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=KEY, http_client=http, max_retries=0)
        assert http.get("/metrics").status_code == 401  # the key guards it like the API
        before = scrape(http)
        assert before['omnigpt_requests_total{endpoint="/metrics",status="401"}'] == 1
        whole = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=5, temperature=0)
        chunks = list(client.completions.create(model="tiny", prompt="Hello", max_tokens=4, stream=True,
                                                stream_options={"include_usage": True}))
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="tiny", prompt="Hello", max_tokens=0)
        after = scrape(http)
    streamed = chunks[-1].usage
    assert after['omnigpt_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 1
    assert after['omnigpt_requests_total{endpoint="/v1/completions",status="200"}'] == 1
    assert after['omnigpt_requests_total{endpoint="/v1/completions",status="400"}'] == 1
    assert after['omnigpt_requests_total{endpoint="/metrics",status="200"}'] == 1  # the first scrape
    assert after["omnigpt_prompt_tokens_total"] == whole.usage.prompt_tokens + streamed.prompt_tokens
    assert after["omnigpt_generation_tokens_total"] == whole.usage.completion_tokens + streamed.completion_tokens
    assert after["omnigpt_time_to_first_token_seconds_count"] == 2
    latency = 'omnigpt_request_duration_seconds_count{endpoint="/v1/completions"}'
    assert after[latency] == 2
    assert after['omnigpt_request_duration_seconds_bucket{endpoint="/v1/completions",le="+Inf"}'] == 2
    assert after["omnigpt_queue_depth"] == 0 and after["omnigpt_running_rows"] == 0
    assert after["omnigpt_max_batch_rows"] == 16
