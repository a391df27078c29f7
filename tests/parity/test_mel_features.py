"""Log-mel features against the references: the mel filterbank and Whisper's feature extractor in
`transformers` (its torch and its numpy paths), for 80 and 128 mels."""
import numpy as np
import pytest
import torch

from conftest import speechlike
from omnigpt.data.audio import MelConfig, log_mel, mel_filterbank

SR = 16000


@pytest.mark.parametrize("n_mels,n_fft,sr,f_min,f_max", [(80, 400, 16000, 0.0, 8000.0),
                                                         (64, 1024, 22050, 20.0, 7600.0)])
def test_mel_filterbank_matches_transformers(n_mels, n_fft, sr, f_min, f_max):
    from transformers.audio_utils import mel_filter_bank

    ref = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                          max_frequency=f_max, sampling_rate=sr, norm="slaney", mel_scale="slaney")
    torch.testing.assert_close(mel_filterbank(n_mels, n_fft, sr, f_min, f_max),
                               torch.from_numpy(ref.T).float(), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("signal", ["mix_7s", "quiet_7s", "near_silent_7s", "short_loud_3s", "over_30s"])
def test_whisper_log_mel_matches_transformers(signal):
    from transformers import WhisperFeatureExtractor

    audio = {"mix_7s": lambda: speechlike(7.0, 0),
             # quiet: the example's own max - 8 clamp lies just above the 1e-10 floor (a batch max would not)
             "quiet_7s": lambda: speechlike(7.0, 1, loudness=0.02),
             # near silent: max - 8 falls below the floor, so the 1e-10 floor bounds it instead
             "near_silent_7s": lambda: speechlike(7.0, 1, loudness=1e-4),
             "short_loud_3s": lambda: np.clip(speechlike(3.0, 2, loudness=3.0), -1, 1),
             "over_30s": lambda: speechlike(31.5, 3)}[signal]()
    fe = WhisperFeatureExtractor()
    ref = fe(audio, sampling_rate=SR, return_tensors="np")["input_features"][0]
    ref_numpy = fe._np_extract_fbank_features(ref_input(audio)[None], "cpu")[0]  # no torch.stft involved
    ours = log_mel(torch.from_numpy(audio), MelConfig.whisper())
    assert ours.shape == ref.shape == (80, 3000)
    assert np.abs(ours.numpy() - ref).max() < 1e-3
    assert np.abs(ours.numpy() - ref_numpy).max() < 1e-3


def ref_input(audio: np.ndarray) -> np.ndarray:
    return np.pad(audio, (0, max(0, 480000 - len(audio))))[:480000]


def test_whisper_large_v3_mels_match_transformers():
    from transformers import WhisperFeatureExtractor

    audio = speechlike(4.0, 4)
    ref = WhisperFeatureExtractor(feature_size=128)(audio, sampling_rate=SR, return_tensors="np")["input_features"]
    ours = log_mel(torch.from_numpy(audio)[None], MelConfig.whisper(n_mels=128))
    assert ours.shape == ref.shape == (1, 128, 3000)
    assert np.abs(ours.numpy() - ref).max() < 1e-3
