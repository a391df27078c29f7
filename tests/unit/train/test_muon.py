import dataclasses
import json

import pytest
import torch

from omnigpt import ConfigError, load_checkpoint, train
from omnigpt.cli import main
from omnigpt.config import Config
from omnigpt.model.lora import apply_lora
from omnigpt.model.omni import build_model
from omnigpt.train.muon import MuonAdamW, hidden_matrices, newton_schulz
from omnigpt.train.optim import build_optimizer
from omnigpt.train.state import load_trainer_state

from conftest import tiny_omni_config


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]


@pytest.mark.parametrize("shape", [(48, 96), (96, 48), (64, 64)])
def test_newton_schulz_gives_the_orthogonal_factor_of_the_matrix(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    g = u @ torch.diag(torch.logspace(-1.5, 0, k)) @ v.T  # singular values over a decade and a half
    o = newton_schulz(g)
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.25  # every direction about the same size, the small ones included
    exact = u @ v.T
    cosine = (o * exact).sum() / (o.norm() * exact.norm())
    assert cosine > 0.97  # the same singular vectors as the matrix's own


def test_muon_takes_the_blocks_and_projector_matrices_and_adamw_the_rest():
    cfg = tiny_omni_config(optimizer="muon")
    model = build_model(cfg, 256, 257)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[i] for i in hidden_matrices(model)}
    assert "gpt.blocks.0.attn.qkv.weight" in muon and "gpt.blocks.1.mlp.proj.weight" in muon
    assert any(n.startswith("projector.") for n in muon)
    assert all(n.endswith(".weight") for n in muon)
    assert not {"gpt.wte.weight", "vision.stages.0.weight"} & muon  # embeddings and convolutions: AdamW
    lora = tiny_omni_config(optimizer="muon", lora={"rank": 2})
    adapted = build_model(lora, 256, 257)
    apply_lora(adapted, lora.train.lora)
    assert isinstance(build_optimizer(adapted, lora.train), torch.optim.AdamW)  # no trainable matrix for Muon
    opt = build_optimizer(model, cfg.train)
    assert isinstance(opt, MuonAdamW)
    grouped = [(g["muon"], id(p)) for g in opt.param_groups for p in g["params"]]
    assert sorted(i for _, i in grouped) == sorted(id(p) for p in model.parameters())  # each one once
    assert {names[i] for m, i in grouped if m} == muon
    adamw = build_optimizer(model, dataclasses.replace(cfg.train, optimizer="adamw"))
    assert isinstance(adamw, torch.optim.AdamW)


def test_its_adamw_groups_step_exactly_as_torch_adamw():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = MuonAdamW([{"params": a}], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    theirs = torch.optim.AdamW([{"params": b}], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in a]
        for ps, opt in ((a, ours), (b, theirs)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(192, 768), (768, 192), (192, 192)])
def test_a_muon_matrix_step_has_the_size_of_an_adamw_step(shape):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(*shape))
    opt = MuonAdamW([{"params": [w], "muon": True}], lr=1e-3)
    w.grad = torch.randn(*shape)
    opt.step()
    rms = w.detach().pow(2).mean().sqrt()
    assert 0.15e-3 < rms < 0.25e-3  # 0.2 * lr, as AdamW's updates typically are, whatever the shape
    with pytest.raises(ValueError, match="Muon takes 2-D weight matrices only"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=1e-3)


def test_a_muon_run_learns_and_resumes_exactly(tiny, tmp_path):
    cfg = tiny(max_steps=12, optimizer="muon", save_interval=6)
    train(cfg, tmp_path / "straight", progress=False)
    straight = losses(tmp_path / "straight")
    assert straight[-1][1] < straight[0][1] - 1.0
    train(cfg, tmp_path / "split", stop_at_step=6, progress=False)
    state = load_trainer_state(tmp_path / "split" / "checkpoints" / "step-00000006")
    assert any(name.endswith(".momentum_buffer") for name in state["tensors"])
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert losses(tmp_path / "split") == straight
    a = load_checkpoint(tmp_path / "straight").model.state_dict()
    b = load_checkpoint(tmp_path / "split").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_the_other_optimizer_is_refused(tiny, tmp_path):
    train(tiny(max_steps=10), tmp_path / "r", stop_at_step=5, progress=False)
    with pytest.raises(ConfigError, match="train.optimizer is muon but the run being resumed trained with adamw"):
        train(tiny(max_steps=10, optimizer="muon"), tmp_path / "r", resume=True, progress=False)


def test_the_optimizer_flag_sets_it_and_a_bad_one_is_a_usage_error(tiny, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny(max_steps=3).to_yaml())
    main(["pretrain", "--config", str(config), "--out", str(tmp_path / "r"), "--optimizer", "muon", "--quiet"])
    assert load_checkpoint(tmp_path / "r").config.train.optimizer == "muon"
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--config", str(config), "--out", str(tmp_path / "s"), "--optimizer", "sgd"])
    assert exc.value.code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {optimizer: lion}\n")
    with pytest.raises(ConfigError, match=r"'train.optimizer' must be one of \['adamw', 'muon'\], got 'lion'"):
        Config.load(bad)
