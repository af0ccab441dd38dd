"""tellme: ternary-LLM accelerator generator."""
__version__ = "0.1.0"
