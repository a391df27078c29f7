"""MultimodalClassifier: per-modality encoders, pooling, a fusion strategy and a class head.

Inputs are a batch of examples, each with any of text (token ids), an image and an audio clip; `present`
(B, M) says which of the configured modalities (in `MODALITIES` order) each example has. Missing inputs
are filled with placeholders by the batch (a pad token, a zero image, a short silent clip) that the model
never reads: fusion masks them out or swaps in a learned "absent" vector.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MODALITIES, Config
from .audio import AudioEncoder, lengths_after_stride, valid_mask
from .fusion import Projector
from .heads import AttentionFusion, ConcatFusion, GatedFusion, Pool, ProductFusion, WeightedSumFusion
from .gpt import GPT
from .vision import build_vision_encoder

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer



class TextLSTM(nn.Module):
    """Token embeddings through a bidirectional LSTM: (B, T) ids, lengths -> (B, T, 2 * width)."""

    def __init__(self, vocab_size: int, width: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.lstm = nn.LSTM(width, width, batch_first=True, bidirectional=True)
        self.out_dim = 2 * width

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])[0]


class AudioLSTM(nn.Module):
    """Log-mel frames averaged 4 to 1 (25 a second at a 10 ms hop), a linear layer, a bidirectional LSTM:
    (B, n_mels, frames), lengths -> ((B, T, 2 * width), lengths)."""

    def __init__(self, n_mels: int, width: int):
        super().__init__()
        self.inp = nn.Linear(n_mels, width)
        self.lstm = nn.LSTM(width, width, batch_first=True, bidirectional=True)
        self.out_dim = 2 * width

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features * valid_mask(lengths, features.shape[-1])[:, None, :].to(features.dtype)
        x = F.avg_pool1d(x, 4, 4, ceil_mode=True).transpose(1, 2)
        lengths = lengths_after_stride(lengths, 4)
        packed = nn.utils.rnn.pack_padded_sequence(torch.tanh(self.inp(x)), lengths.clamp(min=1).cpu(),
                                                   batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], lengths


class MultimodalClassifier(nn.Module):
    predicts = "classes"

    def __init__(self, config: Config, tokenizer: Optional[Tokenizer] = None):
        """tokenizer: encodes the words of early fusion's `classifier.template` (needed only when it has words)."""
        super().__init__()
        c = config.classifier
        if c is None:
            raise ValueError("MultimodalClassifier needs a 'classifier' section in the config")
        if len(c.labels) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {c.labels}")
        self.full_config = config
        self.config = config.model
        self.cls_config = c
        self.labels = list(c.labels)
        self.modalities = [m for m in MODALITIES if m in c.modalities]
        self.accepts = frozenset(self.modalities)  # what the model can take
        self.fusion = c.fusion
        early = c.fusion == "early"
        width = config.model.n_embd if early else c.width
        if "text" in self.modalities or early:
            if c.text_encoder == "lstm" and not early:
                self.text = TextLSTM(config.model.vocab_size, c.lstm_width)
            else:
                self.text = GPT(config.model)
        if "image" in self.modalities:
            self.vision = build_vision_encoder(config.vision)
        if "audio" in self.modalities:
            self.audio = AudioLSTM(config.audio.n_mels, c.lstm_width) if c.audio_encoder == "lstm" \
                else AudioEncoder(config.audio)
        dims = {"text": getattr(self.text, "out_dim", config.model.n_embd) if hasattr(self, "text") else 0,
                "image": getattr(self, "vision", None) and self.vision.out_dim,
                "audio": getattr(self, "audio", None) and self.audio.out_dim}
        self.project = nn.ModuleDict({m: Projector(dims[m], width, "linear" if m == "text" and early else "mlp")
                                      for m in self.modalities if not (early and m == "text")})
        M = len(self.modalities)
        if early:
            _, spans = c.early_spans()
            self.span_modalities = [m for m, _ in spans]
            self.template_ids = c.template_ids(tokenizer)
            self.absent = nn.Parameter(torch.randn(len(spans), width) * 0.02)  # a missing modality's readout
            head_in = width * len(spans)
        else:
            self.pools = nn.ModuleDict({m: Pool(c.pool, width, c.fusion_heads, c.dropout) for m in self.modalities})
            if c.fusion == "concat":
                self.fuse = ConcatFusion(M, width)
            elif c.fusion == "weighted_sum":
                self.fuse = WeightedSumFusion(M, width)
            elif c.fusion == "gated":
                self.fuse = GatedFusion(M, width)
            elif c.fusion == "product":
                self.fuse = ProductFusion(M, width)
            else:
                self.fuse = AttentionFusion(M, width, c.fusion_heads, c.fusion_layers, c.dropout)
            head_in = self.fuse.out_dim
        self.head = nn.Sequential(nn.LayerNorm(head_in), nn.Linear(head_in, c.hidden), nn.GELU(),
                                  nn.Dropout(c.dropout), nn.Linear(c.hidden, len(self.labels)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # Where an omni model's (or a text GPT's) weights go: its part's name prefix -> this model's.
    PRETRAINED_PARTS = {"gpt.": "text.", "vision.": "vision.", "audio_encoder.": "audio.",
                        "projector.": "project.image.", "audio_projector.": "project.audio."}

    def adopt_pretrained(self, weights: dict[str, torch.Tensor], source: str = "the checkpoint") -> list[str]:
        """Copy a pretrained omni model's decoder, encoders and projectors (or a text GPT's weights) into the
        matching parts of this classifier; returns the parts copied.

        Every encoder this classifier and the source both have must fit exactly (use the source's model,
        vision and audio sections); a projector is copied only when its shapes fit (early fusion, or a
        `classifier.width` equal to the source's `model.n_embd`), else it starts fresh. An LSTM encoder has
        no pretrained counterpart and starts fresh too."""
        if not any(name.startswith("gpt.") for name in weights):  # a text GPT: all of it is the decoder
            weights = {"gpt." + name: value for name, value in weights.items()}
        own = self.state_dict()
        tied: dict[str, list[str]] = {}  # a tied weight (the GPT's embedding and output) is stored once
        for name, value in own.items():
            tied.setdefault(value.data_ptr(), []).append(name)
        lstm = {"text.": not isinstance(getattr(self, "text", None), GPT),
                "audio.": not isinstance(getattr(self, "audio", None), AudioEncoder)}
        copied: dict[str, torch.Tensor] = {}
        parts = []
        for src, dst in self.PRETRAINED_PARTS.items():
            theirs = {dst + n[len(src):]: v for n, v in weights.items() if n.startswith(src)}
            mine = {n for n in own if n.startswith(dst)}
            if not theirs or not mine or lstm.get(dst):
                continue
            unmet = sorted(n for n in mine if not any(t in theirs for t in tied[own[n].data_ptr()]))
            bad = unmet + sorted(n for n in theirs if n not in own or theirs[n].shape != own[n].shape)
            if bad:
                if dst.startswith("project."):
                    continue
                raise ValueError(f"{source}: its {src.rstrip('.')} weights do not fit this classifier's "
                                 f"{dst.rstrip('.')} (first misfits: {bad[:3]}); "
                                 f"use the source's model, vision and audio sections")
            copied.update(theirs)
            parts.append(dst.rstrip("."))
        if not parts:
            raise ValueError(f"{source}: none of its weights fit this classifier (no decoder or encoder in common)")
        self.load_state_dict(copied, strict=False)
        return parts

    # ----------------------------------------------------------------------------------------- encoders
    def _sequences(self, ids, text_lengths, images, audio, audio_lengths) -> dict:
        """Each configured modality's projected vectors (B, T_m, width) and validity (B, T_m)."""
        out = {}
        if "text" in self.modalities:
            valid = valid_mask(text_lengths, ids.shape[1])
            if self.fusion == "early":
                out["text"] = (self.text.wte(ids), valid)
            elif isinstance(self.text, GPT):
                out["text"] = (self.project["text"](self.text.hidden_states(ids)), valid)
            else:
                out["text"] = (self.project["text"](self.text(ids, text_lengths)), valid)
        if "image" in self.modalities:
            x = self.project["image"](self.vision(images))
            out["image"] = (x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        if "audio" in self.modalities:
            x, n = self.audio(audio, audio_lengths)
            out["audio"] = (self.project["audio"](x), valid_mask(n, x.shape[1]))
        return out

    def forward(self, ids: Optional[torch.Tensor] = None, text_lengths: Optional[torch.Tensor] = None,
                images: Optional[torch.Tensor] = None, audio: Optional[torch.Tensor] = None,
                audio_lengths: Optional[torch.Tensor] = None, present: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, class_weights: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """-> (logits (B, classes), mean cross-entropy against labels (B,) when given, weighted per class by
        class_weights (classes,))."""
        dtype = self.head[1].weight.dtype  # a model loaded in bf16 or fp16 takes its float inputs in that dtype
        images = None if images is None else images.to(dtype)
        audio = None if audio is None else audio.to(dtype)
        seqs = self._sequences(ids, text_lengths, images, audio, audio_lengths)
        B = next(iter(seqs.values()))[0].shape[0]
        if present is None:
            present = torch.ones(B, len(self.modalities), dtype=torch.bool, device=self.head[1].weight.device)
        if self.fusion == "early":
            fused = self._early(seqs, present)
        elif self.fusion == "attention":
            fused = self.fuse([seqs[m][0] for m in self.modalities], [seqs[m][1] for m in self.modalities], present)
        else:
            pooled = torch.stack([self.pools[m](*seqs[m]) for m in self.modalities], dim=1)
            fused = self.fuse(pooled, present)
        logits = self.head(fused)
        loss = None
        if labels is not None:
            weight = class_weights.to(logits.dtype) if class_weights is not None else None
            loss = F.cross_entropy(logits.float(), labels, weight=None if weight is None else weight.float())
        return logits, loss

    def _early(self, seqs: dict, present: torch.Tensor) -> torch.Tensor:
        """One token stream per example, laid out by the template: its words (as token embeddings) and each
        present modality's vectors, through the GPT. The fused vector is the final hidden state at the end of
        every modality's span (its vectors and the words after them) side by side, or the learned "absent"
        vector for a modality the example lacks."""
        first = next(iter(seqs.values()))[0]
        words = [self.text.wte(torch.tensor(ids, dtype=torch.long, device=first.device)).to(first.dtype)
                 for ids in self.template_ids]
        B, S = present.shape[0], len(self.span_modalities)
        rows, ends = [], []
        for b in range(B):
            parts, end, length = [words[0]], [], words[0].shape[0]
            for k, m in enumerate(self.span_modalities):
                has = bool(present[b, self.modalities.index(m)])
                if has:
                    parts.append(seqs[m][0][b][seqs[m][1][b]])
                    length += parts[-1].shape[0]
                parts.append(words[k + 1])
                length += words[k + 1].shape[0]
                end.append(length - 1 if has else -1)
            rows.append(torch.cat(parts))
            ends.append(end)
        longest = max(r.shape[0] for r in rows)
        if longest > self.config.block_size:
            raise ValueError(f"early fusion needs {longest} positions but model.block_size is "
                             f"{self.config.block_size}: raise it, or shorten the inputs")
        x = torch.stack([F.pad(r, (0, 0, 0, longest - r.shape[0])) for r in rows])
        h = self.text.hidden_states(inputs_embeds=x)  # right padding: causal rows never see it
        ends_t = torch.tensor(ends, device=h.device)  # (B, S), -1 where the modality is absent
        read = h[torch.arange(B, device=h.device)[:, None], ends_t.clamp(min=0)]  # (B, S, W)
        read = torch.where(ends_t[..., None] >= 0, read, self.absent.to(read.dtype))
        return read.reshape(B, S * read.shape[-1])

    @torch.inference_mode()
    def probabilities(self, **inputs) -> torch.Tensor:
        """(B, classes) softmax probabilities (model inputs as in forward, without labels)."""
        was = self.training
        self.eval()
        try:
            return self(**inputs)[0].float().softmax(-1)
        finally:
            self.train(was)
