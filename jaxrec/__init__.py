"""jaxrec: LLM-based generative recommenders in JAX/Flax with full-catalog evaluation."""

__version__ = "0.1.0"
