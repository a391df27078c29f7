import pytest
import torch

from omnigpt import GPT, ModelConfig
from omnigpt.model.attention import padded_causal_mask


def make(position="learned", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, block_size=48, n_layer=3, n_head=4, n_embd=32, position=position, **kw)
    return GPT(cfg).eval()


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_cached_step_by_step_logits_equal_full_sequence(position):
    model = make(position)
    x = torch.randint(0, 97, (2, 40))
    with torch.no_grad():
        full, _ = model(x)
        caches = model.new_caches(2, 40)
        steps = [model(x[:, :7], caches=caches)[0]]  # a prompt, then one token at a time
        steps += [model(x[:, i:i + 1], caches=caches)[0] for i in range(7, 30)]
        steps += [model(x[:, 30:40], caches=caches)[0]]  # several new tokens after cached ones
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_shapes_loss_and_tied_head():
    model = make()
    x = torch.randint(0, 97, (3, 16))
    logits, loss = model(x, x)
    assert logits.shape == (3, 16, 97)
    assert loss.shape == () and 3.5 < loss.item() < 5.5  # near ln(97) at initialisation
    assert model.lm_head.weight is model.wte.weight
    last, _ = model(x, last_only=True)
    torch.testing.assert_close(last, logits[:, -1:])


def test_ignored_labels_take_no_part_in_the_loss():
    model = make()
    x = torch.randint(0, 97, (1, 10))
    y = x.clone()
    y[:, :5] = -100
    _, part = model(x, y)
    logits, _ = model(x)
    expected = torch.nn.functional.cross_entropy(logits[0, 5:], x[0, 5:])
    torch.testing.assert_close(part, expected)


@pytest.mark.parametrize("weighted", [False, True])
def test_loss_only_gives_the_same_loss_and_gradients_from_the_labelled_positions(weighted):
    model = make().train()
    x = torch.randint(0, 97, (3, 12))
    y = torch.randint(0, 97, (3, 12))
    y[0, :8], y[1, 3:], y[2, ::2] = -100, -100, -100
    w = torch.rand(3, 12) if weighted else None
    _, full = model(x, y, loss_weights=w)
    grads = torch.autograd.grad(full, list(model.parameters()))
    logits, only = model(x, y, loss_weights=w, loss_only=True)
    assert logits is None
    torch.testing.assert_close(only, full)
    for a, b in zip(grads, torch.autograd.grad(only, list(model.parameters()))):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="loss_only needs targets"):
        model(x, loss_only=True)


def test_left_padding_with_mask_matches_the_unpadded_sequence():
    model = make("rope")
    x = torch.randint(0, 97, (1, 12))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), x], 1)
    valid = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 12, dtype=torch.bool)], 1)
    positions = (valid.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        ref, _ = model(x)
        out, _ = model(padded, positions=positions, mask=padded_causal_mask(valid, 16))
    torch.testing.assert_close(out[:, 4:], ref, atol=1e-5, rtol=0)


def test_position_past_the_context_is_a_clear_error():
    model = make()
    with pytest.raises(ValueError, match="past the context length 48"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_dropout_only_in_training_mode():
    model = make(dropout=0.5)
    x = torch.randint(0, 97, (1, 8))
    a, b = model(x)[0], model(x)[0]
    torch.testing.assert_close(a, b)
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])


def test_decoding_head_follows_weight_updates():
    model = make()
    x = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        caches = model.new_caches(2, 8)
        model(x[:, :4], caches=caches)
        fast = model(x[:, 4:], caches=caches, last_only=True)[0]  # decoding: the transposed-head path
        model.wte.weight.add_(0.5)  # an in-place update, as an optimizer step makes
        caches = model.new_caches(2, 8)
        model(x[:, :4], caches=caches)
        after = model(x[:, 4:], caches=caches, last_only=True)[0]
        reference = model(x)[0][:, -1:]  # the full sequence: the plain F.linear path
    assert not torch.allclose(fast, after)
    torch.testing.assert_close(after, reference, atol=1e-5, rtol=0)


LLAMA_STYLE = {"vocab_size": 64, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, "position": "rope",
               "norm": "rmsnorm", "mlp": "swiglu", "mlp_hidden": 48, "n_kv_head": 2, "bias": False,
               "qkv_bias": True, "tie_embeddings": False,
               "rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8}}


def test_llama_style_block_decodes_with_a_cache_of_kv_heads_as_without():
    from omnigpt.config import ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(**LLAMA_STYLE)).eval()
    names = dict(model.named_parameters())
    assert names["blocks.0.attn.qkv.weight"].shape == (32 + 2 * 16, 32)  # 4 query heads, 2 key/value heads of 8
    assert "blocks.0.attn.qkv.bias" in names and "blocks.0.attn.proj.bias" not in names
    assert {"blocks.0.mlp.gate.weight", "blocks.0.mlp.up.weight", "lm_head.weight"} <= set(names)
    caches = model.new_caches(1, 20)
    assert caches[0].k.shape == (1, 2, 20, 8)
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        full, _ = model(ids)
        first, _ = model(ids[:, :6], caches=caches)
        steps = [model(ids[:, t:t + 1], caches=caches)[0] for t in range(6, 12)]
    assert torch.allclose(torch.cat([first] + steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("change,message", [
    ({"n_kv_head": 3}, "model.n_kv_head must be a divisor of model.n_head (4)"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_type 'yarn' is not supported (linear, llama3)"),
    ({"rope_scaling": {"rope_type": "linear"}}, "model.rope_scaling.factor must be a number > 0, got None"),
    ({"position": "learned"}, "model.rope_scaling needs model.position: rope"),
    ({"mlp_hidden": 0}, "model.mlp_hidden must be >= 1"),
])
def test_llama_style_options_are_checked(change, message):
    from omnigpt.config import ConfigError, ModelConfig

    with pytest.raises(ConfigError) as exc:
        ModelConfig(**{**LLAMA_STYLE, **change}).validate()
    assert message in str(exc.value)
