"""Hugging Face interop: models in a local Hugging Face folder (config.json + safetensors) read into omnigpt."""
