"""The multimodal classifier: every fusion strategy's shapes, gradients, masking of absent modalities."""
import pytest
import torch

from conftest import tiny_classifier_config
from omnigpt.config import Config
from omnigpt.data.batch import MODALITIES, EncodedExample, collate_classes
from omnigpt.model.classifier import MultimodalClassifier
from omnigpt.model.heads import GatedFusion, WeightedSumFusion

FUSIONS = ["concat", "weighted_sum", "attention", "early", "gated", "product"]


def _examples(n=4, seed=0, missing=()):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        out.append(EncodedExample(
            None if "text" in missing else torch.randint(3, 250, (3 + i,), generator=g).tolist(),
            images=[] if "image" in missing else [torch.randn(3, 32, 32, generator=g)],
            audio=[] if "audio" in missing else [torch.randn(16, 40 + 10 * i, generator=g)],
            label=i % 2))
    return out


def _batch(examples):
    return collate_classes(examples, list(MODALITIES), pad_id=0, image_size=32, n_mels=16)


def _model(fusion, **kw):
    torch.manual_seed(0)
    return MultimodalClassifier(tiny_classifier_config(fusion, **kw))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes_and_gradients_reach_every_encoder(fusion):
    model = _model(fusion).train()
    logits, loss = model(**_batch(_examples()).model_inputs())
    assert logits.shape == (4, 2) and loss.ndim == 0
    loss.backward()
    for part in ("text", "vision", "audio"):
        grads = [p.grad for p in getattr(model, part).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), (fusion, part)


@pytest.mark.parametrize("encoders", [{"text_encoder": "lstm", "audio_encoder": "lstm"},
                                      {"pool": "cls"}, {"pool": "attention"}])
def test_lstm_encoders_and_poolings(encoders):
    model = _model("concat", **encoders).train()
    logits, loss = model(**_batch(_examples()).model_inputs())
    loss.backward()
    assert logits.shape == (4, 2)
    assert all(any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, m).parameters())
               for m in ("text", "vision", "audio"))


@pytest.mark.parametrize("fusion", FUSIONS)
def test_an_absent_modality_is_not_read(fusion):
    """What a missing input's placeholder holds cannot change the output: it is masked or replaced."""
    model = _model(fusion).eval()
    for gone in MODALITIES:
        examples = _examples(missing=(gone,))
        base = model(**_batch(examples).model_inputs())[0]
        batch = _batch(examples)
        if gone == "text":
            batch.ids = torch.randint(3, 250, batch.ids.shape)
        elif gone == "image":
            batch.images = torch.randn_like(batch.images)
        else:
            batch.audio = torch.randn_like(batch.audio)
        torch.testing.assert_close(model(**batch.model_inputs())[0], base, msg=f"{fusion} reads absent {gone}")
        full = model(**_batch(_examples()).model_inputs())[0]
        assert not torch.allclose(full, base, atol=1e-5), (fusion, gone)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_an_example_classifies_the_same_alone_or_in_a_batch(fusion):
    model = _model(fusion).eval()
    examples = _examples(4) + _examples(2, seed=1, missing=("audio",))
    together = model(**_batch(examples).model_inputs())[0]
    for i, ex in enumerate(examples):
        alone = model(**_batch([ex]).model_inputs())[0]
        torch.testing.assert_close(alone[0], together[i], atol=2e-5, rtol=1e-4)


def test_weighted_sum_weights_sum_to_one_over_present_modalities():
    fusion = WeightedSumFusion(3, 8)
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.5, -1.0, 2.0]))
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    w = fusion.weights(present)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert (w[~present] == 0).all() and w[2, 1] == 1.0
    assert sum(fusion.modality_weights()) == pytest.approx(1.0)
    pooled = torch.randn(3, 3, 8)
    torch.testing.assert_close(fusion(pooled, present)[2], pooled[2, 1])


def test_gates_are_zero_for_missing_modalities():
    gated = GatedFusion(3, 8)
    present = torch.tensor([[True, False, True]])
    g = gated.gates(torch.randn(1, 3, 8), present)
    assert (g[0, 1] == 0).all() and ((g[0, 0] > 0) & (g[0, 0] < 1)).all()


def test_class_weights_weigh_the_loss():
    model = _model("concat").eval()
    batch = _batch(_examples())
    logits, loss = model(**batch.model_inputs())
    batch.class_weights = torch.tensor([3.0, 1.0])
    _, weighted = model(**batch.model_inputs())
    per = torch.nn.functional.cross_entropy(logits, batch.labels, reduction="none")
    w = torch.tensor([3.0, 1.0])[batch.labels]
    torch.testing.assert_close(weighted, (per * w).sum() / w.sum())
    torch.testing.assert_close(loss, per.mean())


def test_early_fusion_reads_the_question_first_and_each_span_end():
    from omnigpt.tokenizer import Tokenizer

    tok = Tokenizer.create("byte", [], 272)
    cfg = tiny_classifier_config("early", template="question: {text} {image} answer: {audio} heard:")
    torch.manual_seed(0)
    model = MultimodalClassifier(cfg, tok).eval()
    assert model.template_ids == [tok.encode("question:"), [], tok.encode(" answer:"), tok.encode(" heard:")]
    examples = _examples(2)
    seqs = model._sequences(**{k: v for k, v in _batch(examples).model_inputs().items()
                               if k in ("ids", "text_lengths", "images", "audio", "audio_lengths")})
    fused = model._early(seqs, torch.ones(2, 3, dtype=torch.bool))
    assert fused.shape == (2, 3 * 32)
    # Another image changes what is read after the image and the audio, not what was read after the text.
    examples[0].images = [torch.randn(3, 32, 32)]
    seqs2 = model._sequences(**{k: v for k, v in _batch(examples).model_inputs().items()
                                if k in ("ids", "text_lengths", "images", "audio", "audio_lengths")})
    other = model._early(seqs2, torch.ones(2, 3, dtype=torch.bool))
    assert torch.allclose(other[0, :32], fused[0, :32], atol=1e-6)
    assert not torch.allclose(other[0, 32:64], fused[0, 32:64]) and not torch.allclose(other[0, 64:], fused[0, 64:])
    assert torch.allclose(other[1], fused[1], atol=1e-6)
    # A missing modality's readout is the learned absent vector.
    gone = model._early(seqs, torch.tensor([[True, True, False], [True, True, True]]))
    assert torch.equal(gone[0, 64:], model.absent[2].detach()) and torch.allclose(gone[1], fused[1], atol=1e-6)


def test_a_template_must_place_every_modality_once_and_words_need_the_tokenizer():
    from omnigpt.config import ConfigError

    with pytest.raises(ConfigError, match="must hold each of"):
        tiny_classifier_config("early", template="{text} {image}").validate()
    with pytest.raises(ValueError, match="needs the tokenizer"):
        MultimodalClassifier(tiny_classifier_config("early", template="q: {text} {image} {audio}"))


def test_encoders_are_adopted_from_an_omni_model():
    from omnigpt.model.omni import OmniGPT

    cfg = tiny_classifier_config("early")
    omni_cfg = Config.from_dict({k: v for k, v in cfg.to_dict().items() if k != "classifier"})
    torch.manual_seed(1)
    omni = OmniGPT(omni_cfg, image_token_id=257, audio_token_id=258)
    model = _model("early")
    parts = model.adopt_pretrained(omni.state_dict())
    assert parts == ["text", "vision", "audio", "project.image", "project.audio"]
    assert torch.equal(model.text.wte.weight, omni.gpt.wte.weight)
    assert torch.equal(model.vision.out.weight, omni.vision.out.weight)
    assert torch.equal(model.project["audio"].net[0].weight, omni.audio_projector.net[0].weight)
    late = _model("concat", width=16)  # projectors of another width start fresh; the encoders still fit
    assert late.adopt_pretrained(omni.state_dict()) == ["text", "vision", "audio"]
    classic = _model("concat", width=16, text_encoder="lstm", audio_encoder="lstm")  # LSTMs start fresh
    assert classic.adopt_pretrained(omni.state_dict()) == ["vision"]
    small = MultimodalClassifier(Config.from_dict({**cfg.to_dict(), "audio": {**cfg.to_dict()["audio"], "width": 16}}))
    with pytest.raises(ValueError, match="audio_encoder weights do not fit this classifier's audio"):
        small.adopt_pretrained(omni.state_dict(), "runs/omni")
