"""Settings shared by the tests that train models for minutes (test_train, test_export, ...).

The trained models themselves are session fixtures in conftest.py, so a model one test file
trains is the model another file decodes, exports or aligns: each is trained once per run.
"""

from __future__ import annotations

# test_train's small Conformer. num_threads pinned: float sums depend on the thread count, so the
# figures the tests state hold on any machine with this CPU kind, whatever its core count (2 is
# torch's default on dev-cpu and CI).
COMMON = [
    "data.max_duration=30",
    "model.encoder.d_model=96",
    "model.encoder.num_layers=4",
    "optim.warmup_steps=100",
    "trainer.enable_progress_bar=false",
    "cmvn_utterances=200",
    "num_threads=2",
]
# The corpus of `prepared`: 600 training utterances from 8 voices; dev and test from held-out voices.
PREPARED_SIZES = {"train-clean": 600, "dev-clean": 40, "test-clean": 60}
PREPARED_SEED = 7
# The shared streaming transducer (conftest.transducer_exp): a causal Conformer with dynamic chunk
# training, pruned RNN-T (its warm-up over 100 steps, not 300: the run has about 900) and an
# auxiliary CTC head (weight 0.3), so one model serves the transducer, CTC-head, export and
# streaming tests.
TRANSDUCER_EPOCHS = 14
TRANSDUCER = [
    "model=conformer_transducer_streaming",
    "model.heads.transducer.loss.warmup_steps=100",
    "+model.heads.ctc={kind:ctc,weight:0.3}",
    f"trainer.max_epochs={TRANSDUCER_EPOCHS}",
]
