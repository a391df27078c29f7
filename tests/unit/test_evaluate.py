"""Evaluation's scores, checked by hand."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_omni_config
from omnigpt.evaluate import text_piece_loss
from omnigpt.model.omni import OmniGPT
from omnigpt.tokenizer import Tokenizer


def test_text_piece_loss_is_the_cross_entropy_of_every_target_token():
    tok = Tokenizer.byte_level()
    torch.manual_seed(0)
    model = OmniGPT(tiny_omni_config("prefix"), tok.image_id).eval()
    pieces, train_pieces = ["abc def", "a much longer piece of text"], ["aaa bbb", "abc"]
    got = text_piece_loss(model, tok, pieces, train_pieces, block_size=160, batch_size=2)  # padded batch
    losses, tokens = [], []
    for p in pieces:
        ids = tok.encode(" " + p) + [tok.eos_id]
        logits, _ = model(torch.tensor([ids[:-1]]))
        losses.append(F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="sum").item())
        tokens += ids[1:]
    assert got["tokens"] == len(tokens)
    assert got["text_val_loss"] == pytest.approx(sum(losses) / len(tokens), rel=1e-5)
    counts = np.bincount([t for p in train_pieces for t in tok.encode(" " + p) + [tok.eos_id]],
                         minlength=tok.vocab_size) + 1.0
    assert got["unigram_loss"] == pytest.approx(-np.log(counts / counts.sum())[tokens].mean(), rel=1e-9)
