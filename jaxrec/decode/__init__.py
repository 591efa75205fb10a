"""jaxrec.decode: on-device beam search constrained to the catalogue's item token sequences.

    trie = ItemTrie.from_sequences(seqs, eos_id=eos)      # NumPy, once
    out = beam_search(model, input_ids, attention_mask, constraint=trie, num_beams=20)
    out.sequences [B,R,S]; out.scores [B,R] (HF sequences_scores); out.item_ids [B,R] (-1 = none)
"""

from jaxrec.decode.beam_search import BeamSearchOutput, beam_search
from jaxrec.decode.constraint import Constraint, per_level_constraint, trie_constraint, unconstrained
from jaxrec.decode.trie import ItemTrie

__all__ = ["BeamSearchOutput", "Constraint", "ItemTrie", "beam_search", "per_level_constraint",
           "trie_constraint", "unconstrained"]
