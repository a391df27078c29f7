"""The audio encoder: token counts, padding that changes nothing, bidirectional reading."""
import math

import pytest
import torch

from omnigpt.config import AudioConfig, Config, ConfigError
from omnigpt.model.audio import AudioEncoder


def _encoder(**kw):
    torch.manual_seed(0)
    cfg = AudioConfig(n_mels=16, width=32, n_layer=2, n_head=2, max_seconds=5.0, **kw)
    cfg.validate()
    return AudioEncoder(cfg).eval(), cfg


@pytest.mark.parametrize("pool_at", ["end", "start"])
@pytest.mark.parametrize("pool", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 7, 100, 101])
def test_one_second_costs_a_bounded_number_of_vectors(pool, frames, pool_at):
    enc, cfg = _encoder(pool=pool, pool_at=pool_at)
    out, lengths = enc(torch.randn(1, 16, frames), torch.tensor([frames]))
    expected = math.ceil(math.ceil(math.ceil(frames / 2) / 2) / pool)  # two stride-2 convs, then pooling
    assert out.shape == (1, expected, 32) and lengths.tolist() == [expected]
    assert cfg.tokens_for_frames(100) == -(-25 // pool)  # 100 frames = 1 s at a 10 ms hop: 25 / pool vectors


@pytest.mark.parametrize("position", ["sinusoidal", "rope"])
@pytest.mark.parametrize("pool,pool_at", [(1, "end"), (2, "end"), (2, "start"), (3, "start")])
def test_a_clip_gives_the_same_vectors_alone_or_padded_in_a_batch(position, pool, pool_at):
    enc, cfg = _encoder(position=position, pool=pool, pool_at=pool_at)
    short, long = torch.randn(16, 37), torch.randn(16, 90)
    alone, n = enc(short[None], torch.tensor([37]))
    batch = torch.zeros(2, 16, 90)
    batch[0, :, :37] = short
    batch[0, :, 37:] = 5.0  # whatever fills the padding must not matter
    batch[1] = long
    together, lengths = enc(batch, torch.tensor([37, 90]))
    assert lengths.tolist() == [n.item(), cfg.tokens_for_frames(90)]
    torch.testing.assert_close(together[0, :n.item()], alone[0], atol=1e-5, rtol=1e-4)
    assert (together[0, n.item():] == 0).all()


def test_pooling_at_the_start_gives_the_blocks_pool_times_fewer_vectors():
    seen = {}
    for pool_at in ("end", "start"):
        enc, _ = _encoder(pool=2, pool_at=pool_at)
        enc.blocks[0].register_forward_pre_hook(lambda m, args, at=pool_at: seen.__setitem__(at, args[0].shape[1]))
        out, lengths = enc(torch.randn(1, 16, 100), torch.tensor([100]))
        assert out.shape[1] == lengths.item() == 13  # the decoder gets as many either way
    assert seen == {"end": 25, "start": 13}
    with pytest.raises(ConfigError, match="audio.pool_at"):
        AudioConfig(encoder="whisper", pool=2, pool_at="start").validate()
    with pytest.raises(ConfigError, match=r"'audio.pool_at' must be one of \['end', 'start'\], got 'middle'"):
        Config.from_dict({"audio": {"pool_at": "middle"}})


def test_the_encoder_reads_the_whole_clip_in_both_directions():
    enc, _ = _encoder()
    x = torch.randn(1, 16, 80)
    a, _ = enc(x, torch.tensor([80]))
    y = x.clone()
    y[..., -8:] += 1.0  # change the end: the first vector changes too
    b, _ = enc(y, torch.tensor([80]))
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-5)


def test_too_long_audio_and_bad_config_are_errors():
    enc, cfg = _encoder()
    with pytest.raises(ValueError, match=r"longer than audio.max_seconds \(5.0 s = 500 frames\)"):
        enc(torch.randn(1, 16, 501), torch.tensor([501]))
    with pytest.raises(ConfigError, match="audio.width"):
        AudioConfig(width=30, n_head=4).validate()


def test_audio_fills_its_placeholders_in_a_multimodal_gpt():
    from omnigpt.config import Config
    from omnigpt.data.batch import EncodedExample, collate
    from omnigpt.model.omni import OmniGPT
    from omnigpt.tokenizer import Tokenizer

    tok = Tokenizer.byte_level()
    cfg = Config.from_dict({"model": {"vocab_size": 272, "block_size": 96, "n_layer": 2, "n_head": 2, "n_embd": 32},
                            "audio": {"n_mels": 16, "width": 32, "n_layer": 1, "n_head": 2, "pool": 2}})
    torch.manual_seed(0)
    model = OmniGPT(cfg, tok.image_id, tok.audio_id).eval()
    clips = [torch.randn(16, 120), torch.randn(16, 60)]
    n = [model.tokens_for_audio(c.shape[1]) for c in clips]
    assert n == [15, 8]
    prompts = [[tok.audio_id] * n[0] + tok.encode(" transcript:"), [tok.audio_id] * n[1] + tok.encode(" t:")]
    batch = collate([EncodedExample(p, tok.encode(" hi")) for p in prompts], tok.pad_id, tok.eos_id, 96)
    feats = torch.zeros(2, 16, 120)
    feats[0], feats[1, :, :60] = clips[0], clips[1]
    inputs = dict(batch.model_inputs(), audio=feats, audio_lengths=torch.tensor([120, 60]),
                  audio_rows=torch.tensor([0, 1]))
    logits, loss = model(**inputs)
    loss.backward()
    assert model.audio_encoder.conv1.weight.grad.abs().sum() > 0
    alone, _ = model(batch.ids[1:, :len(prompts[1])], audio=clips[1][None], audio_lengths=torch.tensor([60]),
                     audio_rows=torch.tensor([0]))
    torch.testing.assert_close(logits[1, :len(prompts[1])], alone[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match=r"prompt 0 has 15 <audio> placeholder tokens but its 0 clip\(s\) take 0"):
        model(batch.ids)


def _image_and_audio_model():
    from omnigpt.config import Config
    from omnigpt.model.omni import OmniGPT
    from omnigpt.tokenizer import Tokenizer

    tok = Tokenizer.byte_level()
    cfg = Config.from_dict({"model": {"vocab_size": 272, "block_size": 96, "n_layer": 2, "n_head": 2, "n_embd": 32},
                            "vision": {"encoder": "cnn", "image_size": 32, "width": 32, "channels": [8, 16],
                                       "reduce": "pool", "grid": 2},
                            "audio": {"n_mels": 16, "width": 32, "n_layer": 1, "n_head": 2, "pool": 2},
                            "fusion": {"mode": "cross_attention"}})
    torch.manual_seed(0)
    model = OmniGPT(cfg, tok.image_id, tok.audio_id).eval()
    with torch.no_grad():
        for layer in model.cross:  # open the gates: at 0 the cross-attention path is invisible
            layer.attn_gate.fill_(0.5)
            layer.ff_gate.fill_(0.5)
    return model, tok


def test_cross_attention_reads_images_and_clips_in_placeholder_order():
    model, tok = _image_and_audio_model()
    assert model.tokens_for_audio(120) == 1  # one placeholder per clip: the decoder reads it by cross-attention
    ids = torch.tensor([tok.encode("a <image> b c <audio> d e")])
    at_image, at_audio = [int((ids[0] == t).nonzero()[0]) for t in (tok.image_id, tok.audio_id)]
    image, other_image = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    clip, other_clip = torch.randn(1, 16, 80), torch.randn(1, 16, 80)

    def run(img, aud):
        return model(ids, images=img, audio=aud, audio_lengths=torch.tensor([80]), audio_rows=torch.tensor([0]))[0][0]

    base = run(image, clip)
    new_image, new_clip = run(other_image, clip), run(image, other_clip)
    # Text before a placeholder does not see what it stands for; text after it does.
    torch.testing.assert_close(new_image[:at_image], base[:at_image])
    assert not torch.allclose(new_image[at_image:at_audio], base[at_image:at_audio], atol=1e-4)
    torch.testing.assert_close(new_clip[:at_audio], base[:at_audio])
    assert not torch.allclose(new_clip[at_audio:], base[at_audio:], atol=1e-4)

    caches = model.new_caches(1, ids.shape[1])  # decoding with caches reads the last clip as the full pass does
    steps = [model(ids[:, :at_audio + 2], images=image, audio=clip, audio_lengths=torch.tensor([80]),
                   audio_rows=torch.tensor([0]), caches=caches)[0]]
    for t in range(at_audio + 2, ids.shape[1]):
        steps.append(model(ids[:, t:t + 1], caches=caches)[0])
    torch.testing.assert_close(torch.cat(steps, dim=1)[0], base, atol=1e-5, rtol=1e-4)
