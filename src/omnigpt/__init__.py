"""omnigpt: a readable multimodal GPT. The text trunk: config, tokenizer, model, training, generation."""
from .config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from .tokenizer import Tokenizer
from .model.gpt import GPT
from .generate import GenerationConfig, generate, stream
from .checkpoint import Checkpoint, load_checkpoint
from .recipes.train import train

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "Tokenizer", "GPT",
           "GenerationConfig", "generate", "stream", "Checkpoint", "load_checkpoint", "train", "__version__"]
