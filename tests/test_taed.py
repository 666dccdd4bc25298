"""TAED (asr/nn/heads/taed.py): a transducer whose predictor is the attention decoder, attending to
the encoder frames up to the end of each frame's chunk, in training and in every search."""

from __future__ import annotations

import pytest
import torch

from asr.decoding.streaming import StreamingRecognizer, stream_decode
from asr.decoding.transducer import (
    transducer_beam_continue,
    transducer_beam_init,
    transducer_greedy_continue,
    transducer_greedy_init,
)
from asr.losses import rnnt_loss
from asr.nn.encoders.chunking import FULL
from asr.nn.heads import build_head
from asr.nn.heads.taed import TAEDHead

V = 9
MAX_SYMBOLS = 3


def _head(seed: int = 0, **kwargs) -> TAEDHead:
    torch.manual_seed(seed)
    dec = {"d_model": 16, "num_layers": 2, "num_heads": 2, "ff_mult": 2, "dropout": 0.0}
    return build_head("taed", 12, V, decoder=dec, joint_dim=20, max_symbols=MAX_SYMBOLS, **kwargs).eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(3, 14, 12, generator=g)
    lens = torch.tensor([14, 9, 5])
    targets = torch.randint(1, V, (3, 4), generator=g)
    return enc, lens, targets, torch.tensor([4, 2, 3])


@torch.no_grad()
def _mix(head: TAEDHead, enc: torch.Tensor, lens: torch.Tensor) -> None:
    """Shift the blank logit so that an untrained head predicts blank on about half of the frames (it
    would otherwise emit labels on every frame, and no test would see a blank cross a chunk)."""
    state = head.predictor.attend(head.predictor(torch.zeros(len(lens), 1, dtype=torch.long))[1], enc, lens)[1]
    logits = head.joint.combine(head.joint.project_enc(enc), head.joint.project_pred(state)[:, None])
    gap = logits[..., 1:].max(-1).values - logits[..., 0]
    head.joint.out.bias[0] += gap[torch.arange(enc.shape[1]) < lens[:, None]].median()


@torch.no_grad()
def reference_greedy(head: TAEDHead, enc: torch.Tensor, n: int, chunk: int) -> tuple[list[int], float, int]:
    """Greedy decoding of one utterance (enc[:n]) by plain loops: at frame t the decoder runs on <sos> and
    the labels so far against the frames *truncated* to the end of t's chunk (no masks), blank moves on,
    a label stays, at most MAX_SYMBOLS labels a frame. Returns the labels, the sum of the decisions'
    log-probs and the number of blanks."""
    memory, enc_p = head.aed.enc_proj(enc[:n]), head.joint.project_enc(enc[:n])
    labels: list[int] = []
    score, blanks = 0.0, 0
    for t in range(n):
        end = n if chunk == FULL else min(n, (t // chunk + 1) * chunk)
        for _ in range(MAX_SYMBOLS):
            ys = torch.tensor([[head.aed.sos, *labels]])
            state = head.aed.decoder.hidden(ys, memory[None, :end], torch.ones(1, end, dtype=torch.bool))[0, -1]
            lp = head.joint.combine(enc_p[t], head.joint.project_pred(state)).log_softmax(-1)
            k = int(lp.argmax())
            score += float(lp[k])
            if k == head.blank:
                blanks += 1
                break
            labels.append(k)
    return labels, score, blanks


def _pieces(enc: torch.Tensor, lens: torch.Tensor, chunk: int):
    """enc[B, T, D] as the streaming runner hands it to a search: chunk frames at a time, with each
    utterance's valid frames in that piece."""
    step = enc.shape[1] if chunk == FULL else chunk
    for s in range(0, enc.shape[1], step):
        yield enc[:, s : s + step], (lens - s).clamp(0, step)


def test_chunk_states_attend_only_to_the_frames_up_to_their_chunk_end():
    """predict_chunks against the decoder run per utterance and chunk on truncated memory (no masks):
    frame t's states for <sos> y_1..y_U use frames < min(T_b, (t // chunk + 1) * chunk)."""
    head = _head()
    enc, lens, targets, tl = _inputs()
    for chunk in (3, 5):
        with torch.no_grad():
            pred = head.predict_chunks(enc, lens, targets, tl, chunk)  # [B, T, U+1, d]
        assert pred.shape == (3, 14, 5, 16)
        for b in range(3):
            n = int(lens[b])
            memory = head.aed.enc_proj(enc[b, :n])
            ys = torch.tensor([[head.aed.sos, *targets[b].tolist()]])
            for t in range(n):
                end = min(n, (t // chunk + 1) * chunk)
                with torch.no_grad():
                    ref = head.aed.decoder.hidden(ys, memory[None, :end], torch.ones(1, end, dtype=torch.bool))[0]
                u = int(tl[b]) + 1
                torch.testing.assert_close(pred[b, t, :u], ref[:u], atol=1e-5, rtol=1e-5)
    # one chunk over everything is the full-context pass, [B, U+1, d]
    with torch.no_grad():
        full = head.predict_chunks(enc, lens, targets, tl, FULL)
        torch.testing.assert_close(head.predict_chunks(enc, lens, targets, tl, 14), full)
    assert full.shape == (3, 5, 16)


def test_loss_is_the_chunked_transducer_loss_plus_the_weighted_decoder_loss():
    head = _head(aed_weight=0.4)
    enc, lens, targets, tl = _inputs()
    for chunk in (FULL, 4):
        out = head.loss(enc, lens, targets, tl, chunk_size=chunk)
        logits = head.joint(enc, head.predict_chunks(enc, lens, targets, tl, chunk))
        transducer = rnnt_loss(logits, targets, lens, tl, reduction="sum") / tl.sum()
        aed = head.aed.loss(enc, lens, targets, tl)["loss"]
        torch.testing.assert_close(out["loss"], transducer + 0.4 * aed)
        torch.testing.assert_close(out["transducer"], transducer.detach())
        assert "acc" in out
        enc_g = enc.clone().requires_grad_(True)
        head.loss(enc_g, lens, targets, tl, chunk_size=chunk)["loss"].backward()
        assert torch.isfinite(enc_g.grad).all() and enc_g.grad[2, 5:].abs().sum() == 0  # padding gets nothing


@pytest.mark.parametrize("chunk", [FULL, 4, 5])
def test_greedy_search_fed_chunk_by_chunk_equals_plain_loop_greedy(chunk):
    """The batched label-looping greedy search, given the encoder frames chunk by chunk as streaming
    does, makes the decisions (labels and score) of the plain per-utterance loop on truncated memory;
    so do the utterances decoded alone."""
    head = _head()
    enc, lens, _, _ = _inputs()
    _mix(head, enc, lens)
    refs = [reference_greedy(head, enc[b], int(lens[b]), chunk) for b in range(3)]
    blanks = labels = 0
    for rows in ([0, 1, 2], [1], [2]):
        state = transducer_greedy_init(head, len(rows))
        for piece, n in _pieces(enc[rows], lens[rows], chunk):
            state = transducer_greedy_continue(head, piece, n, state)
        for i, b in enumerate(rows):
            assert state.tokens[i] == refs[b][0], (chunk, b)
            assert abs(float(state.score[i]) - refs[b][1]) < 1e-4
    for tokens, _, n_blank in refs:
        labels, blanks = labels + len(tokens), blanks + n_blank
    assert labels > 3 and blanks > 3  # both decisions occur, across chunk boundaries


@pytest.mark.parametrize("chunk", [FULL, 4])
def test_decoding_states_are_the_training_states(chunk):
    """The log-prob of greedy search's path in the training lattice (joint over predict_chunks with the
    same chunk) equals the search's own score: decoding sees the states the loss trained."""
    head = _head()
    enc, lens, _, _ = _inputs()
    _mix(head, enc, lens)
    state = transducer_greedy_init(head, 3)
    for piece, n in _pieces(enc, lens, chunk):
        state = transducer_greedy_continue(head, piece, n, state)
    hyps = state.tokens
    tl = torch.tensor([len(h) for h in hyps])
    targets = torch.zeros(3, max(1, int(tl.max())), dtype=torch.long)
    for b, h in enumerate(hyps):
        targets[b, : len(h)] = torch.tensor(h, dtype=torch.long)
    with torch.no_grad():
        lp = head.joint(enc, head.predict_chunks(enc, lens, targets, tl, chunk)).log_softmax(-1)
    for b in range(3):
        t = u = on_frame = 0
        score = 0.0
        while t < int(lens[b]):
            k = int(lp[b, t, u].argmax())  # greedy's decision there: blank, or the path's next label
            assert k == head.blank or (u < int(tl[b]) and k == int(targets[b, u]))
            score += float(lp[b, t, u, k])
            if k == head.blank:
                t, on_frame = t + 1, 0
            else:
                u, on_frame = u + 1, on_frame + 1
                if on_frame == MAX_SYMBOLS:
                    t, on_frame = t + 1, 0
        assert u == int(tl[b]) and abs(score - float(state.score[b])) < 1e-4


@pytest.mark.parametrize("chunk", [FULL, 4])
def test_beam_search_with_one_hypothesis_is_greedy_and_batched_equals_alone(chunk):
    head = _head()
    enc, lens, _, _ = _inputs()
    _mix(head, enc, lens)

    def beam(rows: list[int], k: int):
        state = transducer_beam_init(head, len(rows), k)
        for piece, n in _pieces(enc[rows], lens[rows], chunk):
            state = transducer_beam_continue(head, piece, n, state, final=(n < piece.shape[1]) | (n == 0))
        return state.hypotheses()

    greedy = [reference_greedy(head, enc[b], int(lens[b]), chunk)[0] for b in range(3)]
    assert [h.tokens for h in beam([0, 1, 2], 1)] == greedy
    batched = beam([0, 1, 2], 3)
    for b in range(3):
        alone = beam([b], 3)[0]
        assert alone.tokens == batched[b].tokens and abs(alone.score - batched[b].score) < 1e-4


def test_pruned_losses_are_refused():
    with pytest.raises(ValueError, match="full rnnt or tdt"):
        _head(loss={"kind": "pruned_rnnt"})


def test_streaming_recognizer_equals_chunked_greedy(speech_wave):
    """A streaming Conformer + TAED model decoding audio blocks gives, for each chunk size, the labels of
    the plain-loop greedy over the chunk-masked encoder output with the decoder on truncated memory."""
    from asr.model import ASRModel

    torch.manual_seed(0)
    dec = {"d_model": 16, "num_layers": 1, "num_heads": 2, "dropout": 0.0}
    model = ASRModel(
        30,
        encoder={"name": "conformer", "d_model": 32, "num_layers": 2, "num_heads": 4, "subsampling_channels": 8}
        | {"conv_kernel": 5, "causal": True},
        heads={"taed": {"kind": "taed", "decoder": dec, "joint_dim": 16, "max_symbols": MAX_SYMBOLS}},
    ).eval()
    head = model.heads["taed"]
    waves = [speech_wave, speech_wave[: len(speech_wave) // 2]]
    lens = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(2, int(lens.max()))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    with torch.no_grad():
        enc, enc_lens = model(audio, lens)
    _mix(head, enc, enc_lens)
    emitted = 0
    for chunk, left in [(4, 16), (8, FULL)]:
        with torch.no_grad():
            enc, enc_lens = model.encoder(*model.features(audio, lens), chunk, left)
        ref = [reference_greedy(head, enc[b], int(enc_lens[b]), chunk)[0] for b in range(2)]
        assert stream_decode(StreamingRecognizer(model, chunk, left), waves, 3000) == ref
        emitted += sum(map(len, ref))
    assert emitted > 0


def test_viterbi_training_reads_each_frames_chunk_states():
    """With viterbi: true the loss is minus the best path's log-prob in the chunked training lattice."""
    from asr.losses import rnnt_best_path

    head = _head(loss={"kind": "rnnt", "viterbi": True}, aed_weight=0.0)
    enc, lens, targets, tl = _inputs()
    with torch.no_grad():
        logits = head.joint(enc, head.predict_chunks(enc, lens, targets, tl, 4))
        best = rnnt_best_path(logits, targets, lens, tl, 0).score
    out = head.loss(enc, lens, targets, tl, chunk_size=4)
    torch.testing.assert_close(out["loss"].double(), -best.sum() / tl.sum(), atol=1e-4, rtol=1e-5)
