import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from asr.data.datamodule import Batch, collate
from asr.data.tokenizer import Tokenizer
from asr.decoding import ctc_greedy_search, ctc_prefix_beam_search
from asr.losses import ctc_loss
from asr.model import ASRModel
from asr.nn.encoders import build_encoder
from asr.nn.encoders.subsampling import conv2d_subsampling_lengths

SMALL = dict(
    name="conformer", d_model=32, num_layers=2, num_heads=4, conv_kernel=7, dropout=0.0, subsampling_channels=8
)


def test_conformer_shapes_and_lengths():
    torch.manual_seed(0)
    enc = build_encoder(**{**SMALL, "in_features": 80})
    x = torch.randn(3, 101, 80)
    lens = torch.tensor([101, 60, 7])
    y, ylens = enc(x, lens)
    assert y.shape == (3, 24, 32)
    assert ylens.tolist() == [24, 14, 1] == conv2d_subsampling_lengths(lens).tolist()
    assert y[1, 14:].abs().sum() == 0


def test_conformer_output_does_not_depend_on_padding():
    """A short utterance gives the same encoder output alone and padded in a batch."""
    torch.manual_seed(0)
    enc = build_encoder(**{**SMALL, "in_features": 80}).eval()
    short = torch.randn(1, 57, 80)
    batch = torch.randn(2, 140, 80) * 5  # padding holds garbage
    batch[1, :57] = short[0]
    y_alone, n_alone = enc(short, torch.tensor([57]))
    y_batch, n_batch = enc(batch, torch.tensor([140, 57]))
    n = int(n_alone)
    assert int(n_batch[1]) == n
    assert torch.allclose(y_batch[1, :n], y_alone[0, :n], atol=1e-5)


def test_unknown_encoder_or_head_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("transformerx")
    with pytest.raises(ValueError, match="unknown head"):
        ASRModel(10, encoder=SMALL, heads={"x": {"kind": "nope"}})


def test_ctc_loss_reductions_match_torch():
    torch.manual_seed(0)
    lp = torch.randn(3, 20, 6, dtype=torch.float64).log_softmax(-1)
    tg = torch.randint(1, 6, (3, 5))
    il, tl = torch.tensor([20, 15, 9]), torch.tensor([5, 3, 1])
    ref = F.ctc_loss(lp.transpose(0, 1), tg, il, tl, reduction="none")
    assert torch.allclose(ctc_loss(lp, tg, il, tl, reduction="none"), ref)
    assert torch.allclose(ctc_loss(lp, tg, il, tl, reduction="sum"), ref.sum())
    assert torch.allclose(
        ctc_loss(lp, tg, il, tl, reduction="mean"), F.ctc_loss(lp.transpose(0, 1), tg, il, tl, reduction="mean")
    )


def test_greedy_collapses_repeats_and_ignores_padding():
    # frames: a a _ a b b | padding says c c
    seq = [1, 1, 0, 1, 2, 2, 3, 3]
    lp = torch.full((1, 8, 4), -10.0)
    for t, s in enumerate(seq):
        lp[0, t, s] = 0.0
    assert ctc_greedy_search(lp, torch.tensor([6])) == [[1, 1, 2]]
    assert ctc_greedy_search(lp, torch.tensor([8])) == [[1, 1, 2, 3]]


def _collapse(path):
    out, prev = [], None
    for p in path:
        if p != prev and p != 0:
            out.append(p)
        prev = p
    return tuple(out)


def brute_force_best_labeling(lp: torch.Tensor) -> tuple[int, ...]:
    """argmax over labelings of the sum over all alignments (exhaustive; tiny T, V)."""
    t, v = lp.shape
    scores: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(v), repeat=t):
        s = sum(lp[i, p].item() for i, p in enumerate(path))
        k = _collapse(path)
        scores[k] = s if k not in scores else max(scores[k], s) + math.log1p(math.exp(-abs(scores[k] - s)))
    return max(scores, key=scores.get)


def test_prefix_beam_search_finds_most_probable_labeling():
    torch.manual_seed(3)
    found_different_from_greedy = False
    for trial in range(12):
        lp = (torch.randn(1, 6, 3) * 1.5).log_softmax(-1)
        best = brute_force_best_labeling(lp[0])
        hyp = ctc_prefix_beam_search(lp, torch.tensor([6]), beam=27, token_prune=3)[0]
        assert tuple(hyp) == best, trial
        found_different_from_greedy |= tuple(ctc_greedy_search(lp, torch.tensor([6]))[0]) != best
    assert found_different_from_greedy  # the test would notice a beam search that is only greedy


def test_prefix_beam_search_batched_equals_single_and_respects_lengths():
    torch.manual_seed(1)
    lp = torch.randn(3, 12, 5).log_softmax(-1)
    lens = torch.tensor([12, 7, 3])
    batched = ctc_prefix_beam_search(lp, lens, beam=4)
    for b in range(3):
        n = int(lens[b])
        assert batched[b] == ctc_prefix_beam_search(lp[b : b + 1, :n], lens[b : b + 1], beam=4)[0]


def test_prefix_beam_search_fed_in_chunks_equals_one_call():
    """The streaming form: frames fed in chunks (utterances ending in different chunks) give the
    prefixes of one call, and the partial best is a prefix search over the frames so far."""
    from asr.decoding.ctc import ctc_prefix_beam_continue, ctc_prefix_beam_init

    torch.manual_seed(0)
    lp = torch.randn(3, 13, 6).log_softmax(-1)
    lens = torch.tensor([13, 8, 2])
    offline = ctc_prefix_beam_search(lp, lens, beam=3)
    assert offline != ctc_greedy_search(lp, lens)  # the beam matters here
    for chunk in (1, 4, 5):
        state = ctc_prefix_beam_init(3)
        for start in range(0, 13, chunk):
            state = ctc_prefix_beam_continue(
                lp[:, start : start + chunk], (lens - start).clamp(0, chunk), state, beam=3
            )
            partial = torch.minimum(lens, torch.tensor(start + chunk))
            assert state.best() == ctc_prefix_beam_search(lp, partial, beam=3)
        assert state.best() == offline


def test_model_loss_backward_and_decode():
    torch.manual_seed(0)
    model = ASRModel(
        vocab_size=8,
        encoder=SMALL,
        heads={"ctc": {"kind": "ctc", "weight": 1.0}},
        specaug={"freq_masks": 1, "freq_width": 5, "time_masks": 1, "time_width": 0.05},
    )
    from asr.data.datamodule import collate

    waves = [torch.randn(16000) * 0.1, torch.randn(9000) * 0.1]
    batch = collate(waves, [[1, 2, 3], [4, 5]], ["", ""], ["a", "b"])
    out = model.losses(batch)
    assert torch.isfinite(out["loss"]) and set(out) == {"ctc", "loss"}
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)
    model.eval()
    ids = [h.tokens for h in model.decode(batch.audio, batch.audio_lens)]
    assert len(ids) == 2 and all(isinstance(i, list) for i in ids)


MODEL_CONFIGS = [
    "conformer_ctc",
    "conformer_transducer",
    "conformer_pruned_transducer",
    "conformer_tdt",
    "conformer_pruned_tdt",
    "conformer_hybrid_tdt_ctc",
    "conformer_rnnt_tdt_ctc",
    "lstm_transducer",
    "mingru_ctc",
    "conformer_ctc_streaming",
    "conformer_transducer_streaming",
    "conformer_ctc_attention",
    "conformer_ctc_attention_streaming",
    "conformer_taed",
    "conformer_taed_streaming",
]


def test_every_model_config_is_listed():
    from asr.train import CONF_DIR

    assert sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")) == sorted(MODEL_CONFIGS)


def tiny_model(name: str, vocab_size: int, overrides: list[str] | None = None) -> ASRModel:
    """conf/model/<name>.yaml with its encoder and transducer joint shrunk (one or two layers of width
    32, a 16-dim predictor and joint) and `overrides` applied; heads, losses, SpecAugment, dropout and
    optimizer stay as configured."""
    from omegaconf import OmegaConf

    from asr.train import CONF_DIR, compose

    assert (CONF_DIR / "model" / f"{name}.yaml").exists()
    enc_small = {
        "conformer": "model.encoder.d_model=32 model.encoder.num_layers=1",
        "lstm": "model.encoder.d_model=32 model.encoder.hidden=16 model.encoder.num_layers=2",
        "mingru": "model.encoder.d_model=32 model.encoder.num_layers=2",
    }
    cfg = compose([f"model={name}"])
    over = enc_small[cfg.model.encoder.name].split() + ["model.encoder.subsampling_channels=8"]
    for h in cfg.model.heads:
        if cfg.model.heads[h].kind == "transducer":
            over += [f"model.heads.{h}.pred_dim=16", f"model.heads.{h}.joint_dim=16"]
        if cfg.model.heads[h].kind == "attention":
            over += [f"model.heads.{h}.d_model=32", f"model.heads.{h}.num_layers=1", f"model.heads.{h}.num_heads=2"]
        if cfg.model.heads[h].kind == "taed":
            dec = f"model.heads.{h}.decoder"
            over += [f"{dec}.d_model=16", f"{dec}.num_layers=1", f"{dec}.num_heads=2", f"model.heads.{h}.joint_dim=16"]
    cfg = compose([f"model={name}", *over, *(overrides or [])])
    m = OmegaConf.to_container(cfg.model, resolve=True)
    return ASRModel(
        vocab_size,
        m["encoder"],
        m["heads"],
        m["features"],
        m["specaug"],
        OmegaConf.to_container(cfg.optim, resolve=True),
    )


@pytest.fixture(scope="module")
def speech_batches(tiny_corpus, tmp_path_factory) -> tuple[Batch, Batch, Tokenizer]:
    """The two shortest training utterances of the tiny corpus (real speech, 1.7 s and 1.9 s, so one
    is padded) with their transcripts, the same audio with the transcripts swapped, and a char
    tokenizer of the two transcripts."""
    from asr.data.audio import load_audio
    from asr.data.librispeech import read_split
    from asr.data.tokenizer import train_tokenizer

    utts = sorted(read_split(tiny_corpus / "train-clean", progress=False), key=lambda u: (u.num_samples, u.id))[:2]
    tok = train_tokenizer([u.text for u in utts], tmp_path_factory.mktemp("tok") / "char.model", "char")
    waves, ids = [load_audio(u.path)[0] for u in utts], [u.id for u in utts]
    texts = [u.text for u in utts]
    batch = collate(waves, [tok.encode(t) for t in texts], texts, ids)
    swapped = collate(waves, [tok.encode(t) for t in texts[::-1]], texts[::-1], ids)
    return batch, swapped, tok


# The configs' schedules (150 warm-up steps to a peak of 2-3e-3) are meant for thousands of steps;
# a short warm-up to 1e-2 makes 100 steps on one batch enough to learn it.
LEARN_STEPS = 100
LEARN_OVERRIDES = ["optim.warmup_steps=20", "optim.lr=1e-2"]
# Loss before / after the 100 steps (eval mode, same batch), measured: 2.70 (conformer_transducer),
# 2.92 (mingru_ctc), 3.10 (lstm_transducer), 4.8-5.6 (TDT, hybrid, pruned RNN-T), 8.7 (Conformer-CTC).
MIN_LOSS_RATIO = 2.0
# Loss with the transcripts swapped / loss with the right ones, after the 100 steps: a model that
# learnt only which labels come in what order (the predictor, or the token priors) scores both alike.
# Measured: 2.55 (conformer_tdt), 3.9-4.1 (mingru_ctc, hybrid), 12.8-13.8 (Conformer-CTC).
MIN_AUDIO_RATIO = 1.8
# The full-lattice and pruned RNN-T losses first learn the predictor and leave the encoder on a
# plateau (README: conformer_transducer and lstm_transducer are still on it after 6 demo epochs);
# after 100 steps their ratio is 1.00 (full lattice: TAED's too) and 1.1-1.25 (pruned), so only their
# loss is checked.
PREDICTOR_FIRST = {
    "conformer_taed",
    "conformer_taed_streaming",
    "conformer_transducer",
    "conformer_pruned_transducer",
    "lstm_transducer",
    "conformer_transducer_streaming",
}


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_learns_a_batch_and_decodes(name, speech_batches, one_thread):
    """Each conf/model/*.yaml (at a tiny size) learns one batch of real speech with its own optimizer
    and schedule: every parameter, of the encoder and of every head, gets a finite non-zero gradient
    at every step; the loss falls by MIN_LOSS_RATIO and, where the loss learns alignments this fast,
    depends on the audio; the model then decodes greedily and with beam search through its default head."""
    import random

    batch, swapped, tok = speech_batches
    random.seed(0)  # dynamic chunk training samples its chunk sizes from `random`
    torch.manual_seed(0)
    model = tiny_model(name, len(tok), LEARN_OVERRIDES)
    # global CMVN from the batch, as `asr train` estimates it on training audio before fitting
    model.normalizer.fit_([model.fbank(batch.audio, batch.audio_lens)])
    opt = model.configure_optimizers()
    optimizer, schedule = opt["optimizer"], opt["lr_scheduler"]["scheduler"]

    def eval_loss(b: Batch) -> float:  # without dropout and SpecAugment, so that losses compare
        model.eval()
        with torch.no_grad():
            return float(model.losses(b)["loss"])

    before = eval_loss(batch)
    model.train()
    for step in range(LEARN_STEPS):
        optimizer.zero_grad()
        loss = model.losses(batch)["loss"]
        assert torch.isfinite(loss), step
        loss.backward()
        # a zero gradient would be a parameter cut off from the loss (e.g. a joint that drops the encoder)
        bad = [
            n
            for n, p in model.named_parameters()
            if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()
        ]
        assert not bad, f"step {step}: no, zero or non-finite gradient for {bad}"
        optimizer.step()
        schedule.step()
    after, after_swapped = eval_loss(batch), eval_loss(swapped)
    assert after * MIN_LOSS_RATIO < before, f"loss {before:.3f} -> {after:.3f}"
    if name not in PREDICTOR_FIRST:
        assert after * MIN_AUDIO_RATIO < after_swapped, (
            f"loss {after:.3f}, with swapped transcripts {after_swapped:.3f}"
        )

    model.eval()
    has_decoder = any(h.attention_decoder() is not None for h in model.heads.values())
    attention = ("attention", "attention_rescoring") if has_decoder else ()
    for method in ("greedy", "beam", *attention):
        ids = [h.tokens for h in model.decode(batch.audio, batch.audio_lens, method=method, beam=3)]
        assert len(ids) == 2 and all(0 < t < len(tok) for hyp in ids for t in hyp)


def test_hybrid_decodes_with_the_chosen_head():
    torch.manual_seed(0)
    heads = {
        "transducer": {"kind": "transducer", "loss": "tdt", "pred_dim": 8, "joint_dim": 8},
        "ctc": {"kind": "ctc", "weight": 0.3},
    }
    model = ASRModel(9, SMALL, heads).eval()
    audio, lens = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000])
    enc, enc_lens = model(audio, lens)
    assert [h.tokens for h in model.decode(audio, lens, head="ctc")] == ctc_greedy_search(
        model.heads["ctc"](enc), enc_lens
    )
    from asr.decoding import transducer_greedy_search

    assert [h.tokens for h in model.decode(audio, lens)] == transducer_greedy_search(
        model.heads["transducer"], enc, enc_lens
    )
    with pytest.raises(ValueError, match="no head 'rnnt'"):
        model.decode(audio, lens, head="rnnt")
    with pytest.raises(ValueError, match="decode.head='attention'"):
        ASRModel(9, SMALL, heads, decode={"head": "attention"})
    chosen = ASRModel(9, SMALL, heads, decode={"head": "ctc"})
    assert chosen.decode_head() == "ctc" and chosen.hparams["decode"]["head"] == "ctc"  # saved in checkpoints
