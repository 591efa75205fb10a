"""Semantic item indices: RQ-VAE codes for every item, collision resolution, LC-Rec index files.

``build_semantic_index(embeddings, config, seed)`` (in :mod:`jaxrec.index.build`) is the entry point;
``jaxrec index build`` is its CLI.
"""
