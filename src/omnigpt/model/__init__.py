"""Model components: attention, the Transformer block and the GPT decoder."""
from .attention import KVCache
from .block import Block
from .gpt import GPT

__all__ = ["GPT", "Block", "KVCache"]
