import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from omnigpt import ConfigError, load_checkpoint, train
from omnigpt.checkpoint import list_checkpoints
from omnigpt.train.state import load_trainer_state


def losses(run, split="train"):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == split]


def test_short_run_learns_and_writes_metrics_png_and_checkpoint(tiny, tmp_path):
    result = train(tiny(max_steps=30), tmp_path / "run", progress=False)
    train_losses = losses(tmp_path / "run")
    assert [s for s, _ in train_losses] == list(range(1, 31))  # train loss logged every step
    assert train_losses[-1][1] < train_losses[0][1] - 1.0
    assert [s for s, _ in losses(tmp_path / "run", "val")] == [10, 20, 30]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.step == 30 and result.checkpoint.name == "step-00000030"
    assert sorted(p.name for p in result.checkpoint.iterdir()) == [
        "config.yaml", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "trainer_state.safetensors"]
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 30 and ckpt.config.model.n_layer == 2


def test_resume_continues_exactly(tiny, tmp_path):
    cfg = tiny(max_steps=20, grad_accum=2)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "split", stop_at_step=10, progress=False)
    assert losses(tmp_path / "split")[-1][0] == 10
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")  # bit-identical, dropout included
    a = load_checkpoint(tmp_path / "straight").model.state_dict()
    b = load_checkpoint(tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_drops_metrics_logged_after_the_last_checkpoint(tiny, tmp_path):
    cfg = tiny(max_steps=12, save_interval=5)
    train(cfg, tmp_path / "r", stop_at_step=8, progress=False)  # checkpoints at 5 and 8
    import shutil
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-00000008")  # as if killed before saving step 8
    train(cfg, tmp_path / "r", resume=True, progress=False)
    steps = [s for s, _ in losses(tmp_path / "r")]
    assert steps == list(range(1, 13))


def test_gradient_clipping_of_zero_means_no_clipping(tiny, tmp_path):
    train(tiny(max_steps=8, grad_clip=0.0), tmp_path / "r", progress=False)
    assert losses(tmp_path / "r")[-1][1] < losses(tmp_path / "r")[0][1] - 0.5


def test_a_new_run_does_not_overwrite_an_old_one(tiny, tmp_path):
    train(tiny(max_steps=5), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="already holds a training run: continue it with --resume"):
        train(tiny(max_steps=5), tmp_path / "r", progress=False)


@pytest.mark.slow  # over 5 s
def test_sigkill_never_leaves_a_broken_checkpoint(corpus_file, tmp_path):
    from conftest import tiny_config
    cfg = tiny_config(str(corpus_file), max_steps=100000, save_interval=1, keep_checkpoints=2, eval_interval=1000)
    cfg.save(tmp_path / "c.yaml")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.05, 0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-m", "omnigpt.cli", "pretrain", "--config", str(tmp_path / "c.yaml"),
                                 "--out", str(run), "--resume", "--quiet"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not list_checkpoints(run) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found = list_checkpoints(run)
        assert found, proc.stderr.read().decode()
        for ckpt in found:  # every complete-looking checkpoint loads, weights and trainer state
            assert load_checkpoint(ckpt).step == load_trainer_state(ckpt)["meta"]["step"]
    assert load_trainer_state(found[-1])["meta"]["step"] > 1


@pytest.mark.slow  # over 5 s
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_processes_give_the_loss_of_one(corpus_file, tmp_path):
    from conftest import tiny_config
    one = tiny_config(str(corpus_file), max_steps=6, batch_size=8, eval_interval=100)
    one.model.dropout = 0.0  # dropout masks differ by process; everything else must agree
    two = tiny_config(str(corpus_file), max_steps=6, batch_size=4, eval_interval=100)
    two.model.dropout = 0.0
    two.save(tmp_path / "two.yaml")
    train(one, tmp_path / "r1", progress=False)  # in this process: only the two-process run needs torchrun
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        "-m", "omnigpt.cli", "pretrain", "--quiet", "--config", str(tmp_path / "two.yaml"),
                        "--out", str(tmp_path / "r2")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-12000:]
    l1 = [v for _, v in losses(tmp_path / "r1")]
    l2 = [v for _, v in losses(tmp_path / "r2")]
    assert len(l1) == len(l2) == 6
    torch.testing.assert_close(torch.tensor(l2), torch.tensor(l1), rtol=1e-5, atol=0)


def test_decay_over_minutes_follows_the_time_budget(tiny, tmp_path):
    from omnigpt.train.optim import learning_rate

    cfg = tiny(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100_000, max_minutes=1.0, decay_over="minutes")
    tc = cfg.train
    assert learning_rate(4, tc, 0.9) == pytest.approx(5e-4)  # warmup is counted in steps
    assert learning_rate(50, tc, 0.0) == pytest.approx(1e-3)
    assert learning_rate(50, tc, 0.5) == pytest.approx(5.5e-4)  # halfway down the cosine, not at step 50/100000
    assert learning_rate(50, tc, 1.0) == learning_rate(50, tc, 1.7) == pytest.approx(1e-4)
    assert learning_rate(50, tc) == pytest.approx(1e-3, rel=1e-6)  # by steps: barely started
    train(cfg, tmp_path / "run", progress=False, stop_at_step=12)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    assert lrs[9] == pytest.approx(1e-3) and 1e-4 <= lrs[11] <= 1e-3  # after warmup: the time-based cosine
    cfg.train.max_minutes = None
    with pytest.raises(ConfigError, match="decay_over: minutes needs train.max_minutes"):
        cfg.validate()


def test_a_deadline_ends_training_on_time_and_the_run_records_the_budget_it_left(tiny, tmp_path):
    from omnigpt import Config

    cfg = tiny(max_steps=1_000_000, max_minutes=5.0, decay_over="minutes", save_interval=1_000_000,
               eval_interval=1_000_000)
    start = time.time()
    result = train(cfg, tmp_path / "run", progress=False, deadline=start + 4.0)
    assert 4.0 <= time.time() - start < 9.0 and result.step > 3
    budget = Config.load(tmp_path / "run" / "config.yaml").train.max_minutes
    assert 0 < budget < 4.0 / 60  # what set-up left of the 4 seconds, not the config's 5 minutes
    assert list_checkpoints(tmp_path / "run")[-1].name.endswith(str(result.step))
    with pytest.raises(ConfigError, match="deadline passed .* before the first step"):
        train(tiny(max_minutes=5.0), tmp_path / "late", progress=False, deadline=time.time() - 1)


def test_decay_fraction_holds_the_rate_then_anneals_over_the_rest(tiny):
    from omnigpt.train.optim import learning_rate

    tc = tiny(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110, decay_fraction=0.3).train
    assert learning_rate(5, tc) == pytest.approx(6e-4)  # warmup as before
    assert learning_rate(10, tc) == learning_rate(79, tc) == learning_rate(80, tc) == pytest.approx(1e-3)
    assert learning_rate(95, tc) == pytest.approx(5.5e-4)  # halfway through the last 30 steps
    assert learning_rate(110, tc) == pytest.approx(1e-4)
    assert learning_rate(20, tc, 0.85) == pytest.approx(5.5e-4) and learning_rate(20, tc, 0.69) == pytest.approx(1e-3)
    tc.decay_fraction = 1.0
    assert learning_rate(60, tc) == pytest.approx(5.5e-4)  # the plain cosine
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="decay_fraction must be in"):
            tiny(decay_fraction=bad).validate()
