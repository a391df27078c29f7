"""Data that needs no download: shape scenes, synthesized speech, and the three-modality matching task."""
