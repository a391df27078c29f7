"""Subtitle files from timed segments."""
from omnigpt.subtitles import timestamp, to_srt, to_vtt
from omnigpt.transcribe import Segment


def test_subtitles():
    segs = [Segment(0.5, 2.25, "where is the red triangle"), Segment(3725.5, 3727.0, "four")]
    assert timestamp(3725.5) == "01:02:05,500" and timestamp(3725.5, ".") == "01:02:05.500"
    assert to_srt(segs) == ("1\n00:00:00,500 --> 00:00:02,250\nwhere is the red triangle\n\n"
                            "2\n01:02:05,500 --> 01:02:07,000\nfour\n\n")
    assert to_vtt(segs) == ("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nwhere is the red triangle\n\n"
                            "01:02:05.500 --> 01:02:07.000\nfour\n\n")
