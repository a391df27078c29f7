"""The multimodal model: placeholders, fusion modes, loss masking, caches, freezing, starting from a text GPT."""
import pytest
import torch

from conftest import tiny_omni_config
from omnigpt.config import AudioConfig
from omnigpt.data.builtin import scenes as builtin_scenes
from omnigpt.data.batch import IGNORE_INDEX, EncodedExample, collate, expand_placeholders
from omnigpt.generate import generate
from omnigpt.model.gpt import GPT
from omnigpt.model.omni import OmniGPT
from omnigpt.tokenizer import Tokenizer

TOK = Tokenizer.byte_level()


def _model(fusion="prefix", encoder="cnn", seed=0):
    """A random model; cross-attention gates opened (at 0 they would hide the whole cross-attention path)."""
    torch.manual_seed(seed)
    model = OmniGPT(tiny_omni_config(fusion, encoder), TOK.image_id).eval()
    with torch.no_grad():
        for layer in getattr(model, "cross", []):
            layer.attn_gate.fill_(0.5)
            layer.ff_gate.fill_(0.5)
    return model


def _example(model, prompt, target, n_images, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = expand_placeholders(TOK.encode(prompt), TOK.image_id, model.tokens_per_image)
    return EncodedExample(ids, TOK.encode(target), [torch.randn(3, 32, 32, generator=g) for _ in range(n_images)])


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
@pytest.mark.parametrize("encoder", ["cnn", "vit"])
def test_forward_shapes_and_gradients_reach_every_part(fusion, encoder):
    model = _model(fusion, encoder).train()
    batch = collate([_example(model, "<image> caption:", " a red circle", 1),
                     _example(model, "<image> and <image>:", " two", 2, seed=1)], TOK.pad_id, TOK.eos_id, 160)
    logits, loss = model(**batch.model_inputs())
    assert logits.shape == (*batch.ids.shape, 272)
    loss.backward()
    for part in ("vision", "projector", "gpt"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), part


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_placeholder_count_must_match_the_images(fusion):
    model = _model(fusion)
    batch = collate([_example(model, "<image> <image> caption:", " x", 2)], TOK.pad_id, TOK.eos_id, 160)
    with pytest.raises(ValueError, match=r"prompt 0 has 2 <image> placeholder\(s\) but 1 image\(s\) were given"):
        model(batch.ids, images=batch.images[:1], image_rows=batch.image_rows[:1])
    with pytest.raises(ValueError, match=r"but 0 image\(s\)"):
        model(batch.ids)


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_images_are_read_in_order_and_only_after_their_placeholder(fusion):
    model = _model(fusion)
    a, b = torch.randn(3, 32, 32), torch.randn(3, 32, 32)
    ids = torch.tensor([expand_placeholders(TOK.encode("x y <image> z <image> w"), TOK.image_id,
                                            model.tokens_per_image)])
    ab, _ = model(ids, images=torch.stack([a, b]))
    ba, _ = model(ids, images=torch.stack([b, a]))
    assert not torch.allclose(ab[0, -1], ba[0, -1], atol=1e-4)  # the order of images matters ...
    ab2, _ = model(ids, images=torch.stack([a, b]))
    assert torch.equal(ab, ab2)  # ... and the same order gives the same logits
    first = int((ids[0] == TOK.image_id).nonzero()[0])
    torch.testing.assert_close(ab[0, :first], ba[0, :first])  # text before the first image does not see it


def test_gated_cross_attention_leaves_a_text_gpt_unchanged_at_initialisation():
    cfg = tiny_omni_config("cross_attention")
    torch.manual_seed(0)
    gpt = GPT(cfg.model).eval()
    model = OmniGPT(cfg, TOK.image_id).eval()
    model.gpt.load_state_dict(gpt.state_dict())
    ids = torch.tensor([TOK.encode("<image> caption: a small red circle")])
    images = torch.randn(1, 3, 32, 32)
    expected, _ = gpt(ids)
    got, _ = model(ids, images=images)
    assert torch.equal(got, expected)
    with torch.no_grad():  # opening the gates makes the image matter
        for layer in model.cross:
            layer.attn_gate.fill_(1.0)
    opened, _ = model(ids, images=images)
    assert not torch.allclose(opened, expected, atol=1e-4)


def test_loss_is_taken_on_the_target_tokens_only():
    model = _model("prefix")
    ex = _example(model, "<image> question: how many? answer:", " 2", 1)
    batch = collate([ex], TOK.pad_id, TOK.eos_id, 160)
    labels = batch.targets[0]
    supervised = labels[labels != IGNORE_INDEX].tolist()
    assert supervised == TOK.encode(" 2") + [TOK.eos_id]
    logits, loss = model(**batch.model_inputs())
    keep = labels != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[0, keep], labels[keep])
    assert torch.allclose(loss, manual, atol=1e-6)
    other = collate([_example(model, "<image> question: how many? answer:", " 2", 1)], TOK.pad_id, TOK.eos_id,
                    160)
    other.ids[0, -len(supervised) - 3] = TOK.encode("Q")[0]  # change a prompt token: the labels stay the same
    assert torch.equal(other.targets, batch.targets)


def test_padding_rows_take_no_loss():
    model = _model("prefix")
    short = _example(model, "<image> caption:", " a", 1)
    long = _example(model, "<image> caption:", " a much longer caption here", 1, seed=1)
    batch = collate([short, long], TOK.pad_id, TOK.eos_id, 160)
    n_short = len(short.prompt) + len(short.target)
    assert (batch.targets[0, n_short:] == IGNORE_INDEX).all()
    assert (batch.ids[0, n_short:] == TOK.pad_id).all()


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_cached_decoding_equals_full_forward(fusion):
    model = _model(fusion)
    prompt = expand_placeholders(TOK.encode("<image> caption:"), TOK.image_id, model.tokens_per_image)
    ids = torch.tensor([prompt + TOK.encode(" a red")])
    images = torch.randn(1, 3, 32, 32)
    full, _ = model(ids, images=images)
    caches = model.new_caches(1, ids.shape[1])
    step, _ = model(ids[:, :len(prompt)], images=images, caches=caches)
    outs = [step]
    for t in range(len(prompt), ids.shape[1]):
        step, _ = model(ids[:, t:t + 1], caches=caches)
        outs.append(step)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fusion", ["prefix", "cross_attention"])
def test_a_prompt_gives_the_same_output_alone_in_a_batch_and_with_beams(fusion):
    model = _model(fusion)
    imgs = [s.image for s in builtin_scenes.scenes("test", 3, size=32)]
    prompts = ["<image> caption:", "<image> question: how many circles? answer:", "<image> x"]
    prompts.append("a prompt without an image")
    imgs.append([])
    together = generate(model, TOK, prompts, images=imgs, max_new_tokens=6)
    alone = [generate(model, TOK, p, images=im, max_new_tokens=6) for p, im in zip(prompts, imgs)]
    assert together == alone
    beams = generate(model, TOK, prompts[:2], images=imgs[:2], max_new_tokens=6, num_beams=3)
    assert beams == [generate(model, TOK, p, images=im, max_new_tokens=6, num_beams=3)
                     for p, im in zip(prompts[:2], imgs[:2])]
    assert all("<image>" not in out for out in beams)


def test_generation_never_writes_a_placeholder():
    model = _model("prefix")
    with torch.no_grad():
        model.gpt.lm_head.weight[TOK.image_id] += 50.0  # make <image> the most likely token everywhere
    out = generate(model, TOK, "<image> caption:", images=torch.randn(3, 32, 32), max_new_tokens=5)
    assert "<image>" not in out and len(TOK.encode(out)) == 5


def test_example_averaged_loss_weighs_a_short_answer_like_a_long_caption():
    model = _model("prefix")
    short = _example(model, "<image> q:", " 2", 1)
    long = _example(model, "<image> caption:", " a small red circle at the top left", 1, seed=1)
    batch = collate([short, long], TOK.pad_id, TOK.eos_id, 160, loss_average="example")
    assert torch.allclose(batch.loss_weights.sum(1), torch.ones(2))
    logits, loss = model(**batch.model_inputs())
    per_example = []
    for r in range(2):
        keep = batch.targets[r] != IGNORE_INDEX
        per_example.append(torch.nn.functional.cross_entropy(logits[r, keep], batch.targets[r, keep]))
    torch.testing.assert_close(loss, torch.stack(per_example).mean())
    token_batch = collate([short, long], TOK.pad_id, TOK.eos_id, 160)
    assert token_batch.loss_weights is None


@pytest.mark.parametrize("encoder,reduce,tokens", [("cnn", "none", 64), ("cnn", "pool", 9), ("cnn", "pixel_shuffle", 16),
                                                   ("vit", "none", 16), ("vit", "pool", 4), ("vit", "pixel_shuffle", 4)])
def test_token_reduction_bounds_the_tokens_an_image_takes(encoder, reduce, tokens):
    from omnigpt.config import VisionConfig
    from omnigpt.model.vision import build_vision_encoder

    cfg = VisionConfig(encoder=encoder, image_size=32, width=16, channels=[8, 8], patch_size=8, n_layer=1,
                       n_head=2, reduce=reduce, grid=3 if encoder == "cnn" else 2, reduce_factor=2)
    cfg.validate()
    enc = build_vision_encoder(cfg)
    out = enc(torch.randn(2, 3, 32, 32))
    assert cfg.tokens == tokens and out.shape == (2, tokens, enc.out_dim)
    assert enc.out_dim == 16 * (cfg.reduce_factor ** 2 if reduce == "pixel_shuffle" else 1)


def test_generate_checks_images_against_placeholders():
    from omnigpt.generate import GenerationError

    model = _model("prefix")
    img = torch.randn(3, 32, 32)
    with pytest.raises(GenerationError, match=r"prompt 0 has 1 <image> placeholder\(s\) but 0 image\(s\)"):
        generate(model, TOK, "<image> caption:", max_new_tokens=2)
    with pytest.raises(GenerationError, match=r"prompt 0 has 0 <image> placeholder\(s\) but 1 image\(s\)"):
        generate(model, TOK, "caption:", images=img, max_new_tokens=2)
    with pytest.raises(GenerationError, match="one image .* per prompt"):
        generate(model, TOK, ["<image> a", "<image> b"], images=img, max_new_tokens=2)
    with pytest.raises(GenerationError, match=r"preprocessed to \(3, 32, 32\), got \(3, 16, 16\)"):
        generate(model, TOK, "<image> a", images=torch.randn(3, 16, 16), max_new_tokens=2)


def test_a_packed_batch_of_images_and_clips_gives_each_example_its_loss_alone():
    """data.pack for a prefix-fusion model: examples share rows, each image and clip fills its own
    placeholders, and every example's per-token losses are what they are alone (so packing changes speed,
    not learning). The clips' lengths differ enough that the encoder runs them in length groups."""
    from omnigpt.model.omni import length_groups

    cfg = tiny_omni_config()
    cfg.audio = AudioConfig(n_mels=16, width=32, n_layer=1, n_head=2, pool=2, max_seconds=4.0)
    torch.manual_seed(0)
    model = OmniGPT(cfg, TOK.image_id, TOK.audio_id).eval()
    g = torch.Generator().manual_seed(1)

    def spoken(frames, text):
        ids = expand_placeholders(TOK.encode("<audio> transcript:"), TOK.audio_id, model.tokens_for_audio(frames))
        return EncodedExample(ids, TOK.encode(text), audio=[torch.randn(16, frames, generator=g)])

    rows = [_example(model, "<image> caption:", " a red circle", 1), spoken(37, " one"),
            _example(model, "<image> and <image>:", " two", 2, seed=1), spoken(300, " a longer clip"),
            spoken(120, " three")]
    assert len(length_groups([37, 300, 120])) > 1
    packed = collate(rows, TOK.pad_id, TOK.eos_id, 160, pack=True)
    assert packed.ids.shape[0] < len(rows)
    with torch.no_grad():
        logits, loss = model(**packed.model_inputs())
        keep = packed.targets != IGNORE_INDEX
        packed_tokens = torch.nn.functional.cross_entropy(logits[keep], packed.targets[keep], reduction="none")
        alone = []
        for r in rows:
            one = collate([r], TOK.pad_id, TOK.eos_id, 160)
            lg, _ = model(**one.model_inputs())
            k = one.targets != IGNORE_INDEX
            alone.append(torch.nn.functional.cross_entropy(lg[k], one.targets[k], reduction="none"))
    torch.testing.assert_close(packed_tokens, torch.cat(alone), rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, torch.cat(alone).mean(), rtol=0, atol=1e-5)


def test_length_groups_cover_every_clip_once_shortest_first():
    from omnigpt.model.omni import length_groups

    lengths = [250, 40, 45, 260, 42, 255, 48, 251]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [[lengths[i] for i in g] for g in groups] == [[40, 42, 45, 48], [250, 251, 255, 260]]
    assert length_groups([90] * 6) == [list(range(6))]  # equal lengths: one group, nothing gained by splitting
    assert length_groups([100, 104, 108, 112]) == [[0, 1, 2, 3]]  # a few frames apart: not worth a second pass
    assert length_groups([]) == []


def test_ctc_weight_adds_the_transcripts_ctc_loss_in_training_only():
    """audio.ctc_weight: in training the loss is the decoder's plus the weight times the CTC loss of each
    transcribed clip's encoder vectors against its transcript's ids (blank: the last class); in eval mode
    (and for clips that are not a transcription) it is the decoder's alone; gradients reach the head."""
    cfg = tiny_omni_config()
    cfg.audio = AudioConfig(n_mels=16, width=32, n_layer=1, n_head=2, pool=2, max_seconds=4.0, ctc_weight=0.3)
    torch.manual_seed(0)
    model = OmniGPT(cfg, TOK.image_id, TOK.audio_id)
    g = torch.Generator().manual_seed(1)

    def spoken(frames, text, task="transcribe"):
        ids = expand_placeholders(TOK.encode("<audio> transcript:"), TOK.audio_id, model.tokens_for_audio(frames))
        return EncodedExample(ids, TOK.encode(text), audio=[torch.randn(16, frames, generator=g)], task=task)

    rows = [spoken(200, " one"), spoken(120, " two", task="classify"), spoken(300, " a longer one")]
    batch = collate(rows, TOK.pad_id, TOK.eos_id, 160)
    assert batch.audio_target_lengths.tolist() == [len(TOK.encode(" one")), 0, len(TOK.encode(" a longer one"))]
    inputs = batch.model_inputs(loss_only=True)
    _, with_ctc = model.train()(**inputs)
    _, plain = model.eval()(**inputs)
    states = [model.audio_encoder(batch.audio[m:m + 1, :, :n], batch.audio_lengths[m:m + 1])[0][0]
              for m, n in enumerate(batch.audio_lengths.tolist())]
    # the softmax is over the transcripts' tokens (the batch's, sorted) and the blank, the head's last row
    said = sorted(set(TOK.encode(" one")) | set(TOK.encode(" a longer one")))
    head = model.ctc_head
    expected = []
    for m in (0, 2):
        logits = states[m] @ head.weight[said + [-1]].T + head.bias[said + [-1]]
        target = [said.index(t) for t in batch.audio_targets[m, :batch.audio_target_lengths[m]].tolist()]
        expected.append(torch.nn.functional.ctc_loss(logits.log_softmax(-1)[:, None], torch.tensor([target]),
                                                     [states[m].shape[0]], [len(target)], blank=len(said)))
    torch.testing.assert_close(with_ctc - plain, 0.3 * torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)
    model.train()(**inputs)[1].backward()
    assert model.ctc_head.weight.grad.abs().sum() > 0
    assert model.ctc_head in model.modules_to_freeze(["audio"])


def test_ctc_weight_must_not_be_negative():
    from omnigpt.config import ConfigError

    with pytest.raises(ConfigError, match="audio.ctc_weight must be >= 0"):
        AudioConfig(ctc_weight=-0.1).validate()
