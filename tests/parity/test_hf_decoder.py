"""Decoders imported from Hugging Face folders compute what `transformers` computes: logits within 1e-4 and
the same 32 greedy tokens, for each supported family (tiny random models saved to a temporary folder)."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from omnigpt.generate import GenerationConfig, sample_ids  # noqa: E402
from omnigpt.interop.decoder import load_decoder  # noqa: E402
from omnigpt.interop.folder import HFError  # noqa: E402

LLAMA = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)
NEOX = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64)  # Pythia's defaults otherwise: parallel residual, a quarter rotated, erf GELU
MODELS = {
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4)),
    "llama-gqa-llama3-rope": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **LLAMA, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    "llama-tied-linear-rope": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**LLAMA, "num_key_value_heads": 4}, tie_word_embeddings=True,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**LLAMA, tie_word_embeddings=True)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**LLAMA, sliding_window=None)),
    "gpt_neox-sequential-full-rotary": lambda: transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        **NEOX, use_parallel_residual=False, rotary_pct=1.0, rotary_emb_base=500.0, hidden_act="gelu_new")),
}


def saved(name, folder, **save):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    with torch.no_grad():  # random biases (zero at init) so that every tensor's mapping is exercised
        for n, p in model.named_parameters():
            if n.endswith("bias") or "norm" in n or "ln_" in n:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder, **save)
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_and_greedy_tokens_match_transformers(name, tmp_path):
    theirs = saved(name, tmp_path)
    ours = load_decoder(tmp_path)
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(ids).logits
        got, _ = ours(ids)
    assert (got - expected).abs().max().item() < 1e-4
    prompt = ids[0, :8]
    out = theirs.generate(prompt[None], max_new_tokens=32, min_new_tokens=32, do_sample=False,
                          pad_token_id=0, eos_token_id=None)[0, 8:].tolist()
    mine = [int(t) for t in sample_ids(ours, [prompt.tolist()], GenerationConfig(max_new_tokens=32), [], 0)]
    assert mine == out


def test_gpt_neox_settings_omnigpt_does_not_compute_are_refused_by_name(tmp_path):
    transformers.GPTNeoXConfig(**NEOX).save_pretrained(tmp_path)  # Pythia-style; refused before weights are read
    cfg = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(HFError, match="use_parallel_residual true .* not supported"):
        load_decoder(tmp_path)
    cfg["use_parallel_residual"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFError, match=r"rotary_pct \(rope_parameters.partial_rotary_factor\) 0.25 is not supported"):
        load_decoder(tmp_path)
    cfg["rope_parameters"]["partial_rotary_factor"] = 1.0
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFError, match="gpt_neox hidden_act 'gelu' is not supported"):
        load_decoder(tmp_path)


def test_sharded_safetensors_and_a_plain_bin_load(tmp_path):
    theirs = saved("llama-gqa-llama3-rope", tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    saved("llama-gqa-llama3-rope", tmp_path / "bin", safe_serialization=False)
    ids = torch.arange(10)[None]
    with torch.no_grad():
        expected = theirs(ids).logits
        for folder in ("sharded", "bin"):
            assert (load_decoder(tmp_path / folder)(ids)[0] - expected).abs().max().item() < 1e-4


def test_bad_folders_are_named(tmp_path):
    saved("gpt2", tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(HFError, match="model_type 'bert' is not supported; omnigpt reads gpt2, llama"):
        load_decoder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    with pytest.raises(HFError, match=r"tensor for wte.weight has shape \(300, 32\), the config gives \(300, 64\)"):
        load_decoder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "m" / "model.safetensors").unlink()

    class Code:  # a pickle that would run code: refused, never executed
        def __reduce__(self):
            return (print, ("unpickled",))
    torch.save({"w": Code()}, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(HFError, match="does not load as plain tensors .*never unpickles code"):
        load_decoder(tmp_path / "m")


def test_a_hugging_face_folder_is_a_checkpoint_for_every_command(tmp_path, capsys):
    from test_hf_tokenizer import gpt2_style

    from omnigpt.checkpoint import load_checkpoint
    from omnigpt.cli import main

    tok = gpt2_style()
    tok.save_pretrained(tmp_path)
    torch.manual_seed(0)
    theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4)).eval()
    theirs.save_pretrained(tmp_path)
    ckpt = load_checkpoint(tmp_path, device="cpu")
    n = len(tok)
    assert ckpt.model.config.vocab_size == ckpt.tokenizer.vocab_size == n + 6  # pad, image, audio, 3 fill-in-the-middle
    rows = ckpt.model.wte.weight
    assert torch.allclose(rows[n:], theirs.transformer.wte.weight.mean(0).expand(6, -1), atol=1e-6)
    ids = tok("The quick brown", return_tensors="pt").input_ids
    expected = theirs.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0,
                               eos_token_id=None)[0, ids.shape[1]:]
    main(["generate", "--checkpoint", str(tmp_path), "--prompt", "The quick brown", "--max-new-tokens", "12",
          "--json", "--device", "cpu"])
    completion = json.loads(capsys.readouterr().out)[0]["completion"]
    assert completion == tok.decode(expected)


def test_damaged_hugging_face_folders_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    saved("qwen2", tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(HFError, match="non-finite values .* in blocks.1.mlp.up.weight"):
        load_decoder(tmp_path)
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(HFError, match="lack the tensor 'layers.1.mlp.up_proj.weight' that a qwen2 model needs"):
        load_decoder(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["hidden_size"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFError, match="config.json lacks 'hidden_size', which a qwen2 model needs"):
        load_decoder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": 64}))
    with pytest.raises(HFError, match="the safetensors weights are unreadable"):
        load_decoder(tmp_path)


def test_finetune_from_a_hugging_face_language_model(tmp_path, capsys):
    """LLaVA's first stage on built-in scenes: a Llama-style LM from its folder as the decoder, frozen, with
    a new image encoder and projector trained in front of it."""
    from conftest import tiny_omni_config
    from test_hf_tokenizer import llama_style

    from omnigpt.checkpoint import load_checkpoint
    from omnigpt.cli import main
    from omnigpt.interop.decoder import load_pretrained

    tok = llama_style()
    tok.save_pretrained(tmp_path / "lm")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**LLAMA, "vocab_size": len(tok)})).save_pretrained(
        tmp_path / "lm")
    tiny_omni_config(max_steps=3, save_interval=3).save(tmp_path / "c.yaml")
    main(["finetune", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--init-from",
          str(tmp_path / "lm"), "--freeze", "decoder", "--quiet"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    run = load_checkpoint(tmp_path / "run", device="cpu")
    _, lm, tokenizer = load_pretrained(tmp_path / "lm")
    assert run.config.model.norm == "rmsnorm" and run.config.model.n_kv_head == 2
    assert run.tokenizer.encode("a red circle") == tokenizer.encode("a red circle")
    for name, tensor in lm.state_dict().items():  # frozen: still the pretrained weights
        assert torch.equal(run.model.gpt.state_dict()[name], tensor), name
