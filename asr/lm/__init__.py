"""N-gram language models over the acoustic model's tokens, for fusion in beam search.

- `kneser_ney.estimate`: interpolated modified Kneser-Ney from sentences of words.
- `arpa`: the ARPA file format (`read_arpa`, `write_arpa`).
- `NgramLM`: an ARPA model over a tokenizer's ids with explicit states for beam search
  (`initial_state`, `score`, `score_all`, `final_score`).
- `train_lm`, `perplexity`: the logic of `asr lm train` and `asr lm perplexity`.
"""

from .arpa import Arpa, ArpaError, read_arpa, write_arpa
from .kneser_ney import Estimate, estimate
from .ngram import NgramLM
from .train import perplexity, train_lm

__all__ = [
    "Arpa",
    "ArpaError",
    "Estimate",
    "NgramLM",
    "estimate",
    "perplexity",
    "read_arpa",
    "train_lm",
    "write_arpa",
]
