"""Streaming equals offline: encoder chunks with caches, batched streams, and whole recognizers."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
import torch

from asr.decoding import (
    DecodeOptions,
    Hypothesis,
    build_search,
    ctc_greedy_search,
    ctc_prefix_beam_search,
    run_search,
    transducer_beam_search,
    transducer_greedy_search,
)
from asr.decoding.streaming import StreamingRecognizer, stream_decode
from asr.decoding.transducer import BeamState, transducer_beam_continue, transducer_beam_init
from asr.nn.encoders.chunking import FULL, chunk_attention_mask, sample_chunking
from asr.nn.encoders.conformer import ConformerEncoder
from asr.nn.encoders.recurrent import LSTMEncoder, MinRNNEncoder
from asr.nn.heads.transducer import TransducerHead

TOL = 1e-4


def test_chunk_mask_matches_its_definition():
    pos = torch.arange(23)
    for chunk, left in [(4, 8), (4, FULL), (5, 0), (1, 3), (FULL, FULL)]:
        m = chunk_attention_mask(pos, pos, chunk, left)
        for i in range(23):
            for j in range(23):
                if chunk == FULL:
                    want = True
                else:
                    c = i // chunk
                    want = j // chunk <= c and (left == FULL or j >= c * chunk - left)
                assert bool(m[i, j]) == want, (chunk, left, i, j)
    rng = random.Random(0)
    assert sample_chunking((FULL,), (8,), rng) == (FULL, FULL)
    seen = {sample_chunking((4, 8, FULL), (16, FULL), rng) for _ in range(100)}
    assert (FULL, FULL) in seen and (4, 16) in seen and (8, FULL) in seen


def _stream_encoder(enc, x, lens, chunk_frames: tuple[int, int] = (6, FULL)):
    """Feed enc.forward_chunk the frames each call asks for; return per-stream outputs."""
    b, t, f = x.shape
    state = enc.init_state(b, *chunk_frames)
    pos, outs = 0, []
    while pos < t:
        n = enc.chunk_input_frames(state)
        x_lens = (lens - pos).clamp(0, n)
        xc = x[:, pos : pos + n]
        if xc.shape[1] < n:
            xc = torch.cat([xc, xc.new_zeros(b, n - xc.shape[1], f)], dim=1)
        y, y_lens, state = enc.forward_chunk(xc, x_lens, state)
        outs.append((y, y_lens))
        pos += n
    return [torch.cat([y[i, : int(n[i])] for y, n in outs]) for i in range(b)]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 211, 20, generator=g), torch.tensor([211, 150, 61])


# Efficient Conformer variants: 8x from block 1 with grouped attention in the 4x stage; 16x in three stages
EFFICIENT = {
    "plain": {},
    "8x-grouped": {"downsample_at": [1], "attention_groups": [2, 1]},
    "16x-grouped": {"num_layers": 3, "downsample_at": [1, 2], "attention_groups": [4, 2, 1]},
}


@pytest.mark.parametrize("arch", list(EFFICIENT))
@pytest.mark.parametrize("chunk,left", [(4, 8), (4, FULL), (7, 3), (1, 2), (16, 16)])
def test_conformer_chunks_with_caches_equal_one_masked_pass(chunk, left, arch):
    torch.manual_seed(0)
    kw = {"num_layers": 2, **EFFICIENT[arch]}
    enc = ConformerEncoder(
        in_features=20, d_model=32, num_heads=4, conv_kernel=5, subsampling_channels=8, causal=True, **kw
    )
    enc.eval()
    x, lens = _inputs()
    with torch.no_grad():
        ref, ref_lens = enc(x, lens, chunk, left)
        streamed = _stream_encoder(enc, x, lens, (chunk, left))
        for b in range(3):
            r = ref[b, : int(ref_lens[b])]
            assert streamed[b].shape == r.shape
            assert (streamed[b] - r).abs().max() < TOL
            # batched streaming equals streaming this stream alone
            alone = _stream_encoder(enc, x[b : b + 1, : int(lens[b])], lens[b : b + 1], (chunk, left))[0]
            assert (alone - streamed[b]).abs().max() < TOL
        # the chunk mask matters: full context gives other outputs (where the first chunk ends early)
        full, _ = enc(x, lens)
        if chunk < 10:
            assert (full[0, :10] - ref[0, :10]).abs().max() > 1e-3
    # each downsampling halves the frames, rounding up: T' = ceil(((T - 1) // 2 - 1) // 2 / 2^D)
    n = (((lens - 1) // 2 - 1) // 2).tolist()
    for _ in kw.get("downsample_at", []):
        n = [-(-v // 2) for v in n]
    assert ref_lens.tolist() == n and enc.subsampling_factor == 4 * 2 ** len(kw.get("downsample_at", []))


def test_grouped_attention_equals_its_definition():
    """Grouped attention (g = 2) against loops over groups: query group i scores key group j by the
    sum of its frames' rotated dot products at the same offsets, over sqrt(g * Dh); frame i*g+r reads
    the softmax-weighted values of frame r of each group. Odd T: the last group has a zero frame."""
    from asr.nn.encoders.conformer import RotarySelfAttention, apply_rotary

    torch.manual_seed(0)
    att = RotarySelfAttention(16, 2, 0.0, 10000.0, group=2).eval()
    b, t, g, h, dh = 2, 7, 2, 2, 8
    x = torch.randn(b, t, 16)
    valid = torch.ones(b, t, dtype=torch.bool)
    groups = -(-t // g)
    mask = torch.ones(b, 1, groups, groups, dtype=torch.bool)
    with torch.no_grad():
        got = att(x, mask, key_valid=valid)
        q, k, v = att.qkv(att.norm(x)).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
        cos, sin = att.rope(torch.arange(t))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        pad = torch.zeros(b, h, 1, dh)
        q, k, v = (torch.cat([z, pad], dim=2) for z in (q, k, v))
        y = torch.zeros(b, h, groups * g, dh)
        for i in range(groups):
            scores = (
                torch.stack(
                    [sum((q[:, :, i * g + r] * k[:, :, j * g + r]).sum(-1) for r in range(g)) for j in range(groups)],
                    -1,
                )
                / (g * dh) ** 0.5
            )
            w = scores.softmax(-1)  # [b, h, groups]
            for r in range(g):
                y[:, :, i * g + r] = sum(w[..., j, None] * v[:, :, j * g + r] for j in range(groups))
        want = att.out(y[:, :, :t].transpose(1, 2).reshape(b, t, 16))
    assert (got - want).abs().max() < 1e-5
    # grouping changes the result: the same weights ungrouped attend frame by frame
    att.group = 1
    with torch.no_grad():
        assert (att(x, torch.ones(b, 1, t, t, dtype=torch.bool)) - got).abs().max() > 1e-3


def test_efficient_conformer_options_are_checked():
    base = {"in_features": 20, "d_model": 16, "num_heads": 2, "subsampling_channels": 4}
    with pytest.raises(ValueError, match="increasing block indices"):
        ConformerEncoder(num_layers=3, downsample_at=[2, 1], **base)
    with pytest.raises(ValueError, match="increasing block indices"):
        ConformerEncoder(num_layers=3, downsample_at=[3], **base)
    with pytest.raises(ValueError, match="one group size per stage"):
        ConformerEncoder(num_layers=3, downsample_at=[1], attention_groups=[2], **base)
    with pytest.raises(ValueError, match="must divide 2"):
        ConformerEncoder(num_layers=3, downsample_at=[1], attention_groups=[4, 1], **base)
    with pytest.raises(ValueError, match="must divide 1"):
        ConformerEncoder(num_layers=3, attention_groups=[2], **base)


@pytest.mark.parametrize(
    "enc",
    [
        MinRNNEncoder(in_features=20, d_model=16, num_layers=2, subsampling_channels=4, cell="gru"),
        MinRNNEncoder(in_features=20, d_model=16, num_layers=2, subsampling_channels=4, cell="lstm"),
        LSTMEncoder(in_features=20, d_model=16, hidden=12, num_layers=2, subsampling_channels=4),
    ],
    ids=["mingru", "minlstm", "lstm"],
)
def test_recurrent_encoders_stream_by_carrying_state(enc):
    torch.manual_seed(0)
    enc.eval()
    x, lens = _inputs(1)
    with torch.no_grad():
        ref, ref_lens = enc(x, lens)
        streamed = _stream_encoder(enc, x, lens)
    for b in range(3):
        assert streamed[b].shape[0] == int(ref_lens[b])
        assert (streamed[b] - ref[b, : int(ref_lens[b])]).abs().max() < TOL


def test_streaming_needs_a_causal_encoder():
    enc = ConformerEncoder(in_features=20, d_model=16, num_layers=1, num_heads=2, subsampling_channels=4)
    with pytest.raises(ValueError, match="not causal"):
        enc.init_state(1, 4, 8)
    with pytest.raises(ValueError, match="needs causal: true"):
        ConformerEncoder(in_features=20, d_model=16, num_layers=1, num_heads=2, chunk_sizes=[4, -1])
    with pytest.raises(ValueError, match="cannot stream"):
        LSTMEncoder(in_features=20, d_model=16, hidden=8, bidirectional=True).init_state(1, 4, 8)


def test_dynamic_chunk_training_samples_a_mask_per_batch(monkeypatch):
    torch.manual_seed(0)
    enc = ConformerEncoder(
        in_features=20,
        d_model=16,
        num_layers=1,
        num_heads=2,
        subsampling_channels=4,
        causal=True,
        chunk_sizes=[2, -1],
        left_contexts=[4],
        dropout=0.0,
    )
    x, lens = _inputs(2)
    calls = []
    from asr.nn.encoders import conformer

    real = conformer.chunk_attention_mask
    monkeypatch.setattr(
        conformer, "chunk_attention_mask", lambda q, k, c, left: calls.append((c, left)) or real(q, k, c, left)
    )
    # the encoder draws its chunking from the global `random`; a seeded instance makes the 20 draws
    # (and so whether both settings occur) the same on every run
    rng = random.Random(0)
    monkeypatch.setattr(conformer, "sample_chunking", lambda c, left: sample_chunking(c, left, rng))
    enc.train()
    for _ in range(20):
        enc(x, lens)
    assert set(calls) == {(2, 4), (FULL, FULL)}
    enc.eval()
    calls.clear()
    enc(x, lens)
    assert calls == [(FULL, FULL)]  # evaluation defaults to full context


def _model(kind: str, tok_size: int, arch: str = "plain"):
    from asr.model import ASRModel

    heads = (
        {"ctc": {"kind": "ctc"}}
        if kind == "ctc"
        else {"transducer": {"kind": "transducer", "loss": kind, "pred_dim": 16, "joint_dim": 16}}
    )
    torch.manual_seed(0)
    return ASRModel(
        tok_size,
        encoder={
            "name": "conformer",
            "d_model": 32,
            "num_layers": 2,
            "num_heads": 4,
            "subsampling_channels": 8,
            "conv_kernel": 5,
            "causal": True,
            **EFFICIENT[arch],
        },
        heads=heads,
    ).eval()


def _batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms -> zero-padded audio [B, S] and lengths [B]."""
    lens = torch.tensor([len(w) for w in waves])
    audio = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    return audio, lens


MIX_CLASSES = 6  # label classes of _mix_transducer_head, 60 degrees apart


@torch.no_grad()
def _mix_transducer_head(head: TransducerHead, frames: torch.Tensor, seed: int = 0) -> None:
    """Overwrite an untrained transducer head's predictor and joint, in place, so that its searches
    meet what a trained head gives them: blank on most frames, one or two different labels on the
    others, and (TDT) durations from 0 to 4, which jump over chunk boundaries. An untrained head
    emits one label max_symbols times on every frame and never a blank, so streaming it never has
    to carry a skipped blank, a TDT jump or a predictor state into the next chunk.

    Args:
        head: a TransducerHead whose predictor is stateless with two labels of context (the default).
        frames: [N, D_enc] encoder frames of the audio that will be decoded. Their mean and spread
            centre the joint's input: an untrained encoder's frames share a large constant part,
            which would otherwise give every frame the same decision.
        seed: of the random directions and small weights below.

    Construction (K = MIX_CLASSES; the i-th non-blank label is in class i % K):
    - Predictor: one-hot class embeddings that the conv sums, so its channel c counts the labels of
      class c among the last two labels. Joint units 0..K-1 turn that into tanh(3 * count), and each
      label gets -8 from its class's unit: no label follows one of its class, so the labels of a
      frame end with a blank rather than with a cycle cut at max_symbols.
    - Joint units K.. read the standardized frame along seeded random directions. Units K and K+1
      give the frame a direction a and a strength r <= sqrt(2): class c scores 4 r cos(a - 2 pi c / K)
      against 3.2 for blank, so a class fires on frames that point near it strongly. Classes are
      60 degrees apart and sqrt(2) cos(60) < 0.8, so at most two classes beat blank on a frame (up to
      the small weights below): frames emit 0, 1 or 2 labels.
    - The other units pick the label within its class (small weights) and the TDT duration.
    """
    pred, joint = head.predictor, head.joint
    assert getattr(pred, "context_size", None) == 2, "built for the stateless predictor of context 2"
    k, v, n_dur = MIX_CLASSES, head.vocab_size, len(head.durations)
    width, enc_dim = joint.out.weight.shape[1], joint.enc_proj.weight.shape[1]
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([i for i in range(v) if i != head.blank])
    cls = torch.arange(len(labels)) % k
    pred.embed.weight.zero_()  # blank (the start symbol) counts for no class
    pred.embed.weight[labels, cls] = 1.0
    pred.conv.weight.fill_(1.0)
    joint.pred_proj.weight.zero_()
    joint.pred_proj.bias.zero_()
    joint.pred_proj.weight[torch.arange(k), torch.arange(k)] = 3.0
    mean, std = frames.mean(0), frames.std(0)
    directions = torch.randn(width - k, enc_dim, generator=g) * 1.5 / enc_dim**0.5 / std
    joint.enc_proj.weight.zero_()
    joint.enc_proj.bias.zero_()
    joint.enc_proj.weight[k:] = directions
    joint.enc_proj.bias[k:] = -(directions @ mean)
    out, bias = joint.out.weight, joint.out.bias
    out.zero_()
    bias.zero_()
    angle = 2 * math.pi * cls / k
    out[labels, k] = 4.0 * torch.cos(angle)
    out[labels, k + 1] = 4.0 * torch.sin(angle)
    out[:v, k + 2 :] = 0.1 * torch.randn(v, width - k - 2, generator=g)
    out[labels, cls] = -8.0
    bias[head.blank] = 0.8 * 4.0
    if n_dur:
        # small duration logits: a label's best duration beats blank's best duration > 0 by little, which
        # would otherwise let a third class beat blank; a bias on duration 0 lets some frames get a second label
        out[v:, k + 2 :] = 0.3 * torch.randn(n_dur, width - k - 2, generator=g)
        bias[v + head.durations.index(0)] = 0.3


@dataclass(frozen=True)
class Decision:
    """One step of greedy transducer search."""

    frame: int  # the encoder frame it was taken on
    label: int  # head.blank or the label emitted
    advance: int  # frames it moved on (0: stays on the frame)


@torch.no_grad()
def _greedy_alignment(head: TransducerHead, enc: torch.Tensor) -> list[Decision]:
    """Greedy search over one utterance's frames enc[T, D], one decision at a time: a plain restatement
    of transducer_greedy_search's rules (TDT blank only with durations > 0, at most head.max_symbols
    labels on a frame) that also says on which frame each label came, which the search does not."""
    pred, v = head.predictor, head.vocab_size
    durations = torch.tensor(head.durations)
    out, state = pred(torch.full((1, 1), head.blank), pred.init_state(1))
    pred_p, enc_p = head.joint.project_pred(out[0, 0]), head.joint.project_enc(enc)
    decisions: list[Decision] = []
    t = on_frame = 0
    while t < enc.shape[0]:
        logits = head.joint.combine(enc_p[t], pred_p)
        if head.durations:
            # token and duration are normalized separately, so raw logits rank the pairs as log probs do
            pair = logits[:v, None] + logits[None, v:]
            pair[head.blank, durations == 0] = float("-inf")
            label, j = divmod(int(pair.argmax()), len(durations))  # ties go to blank, as in the search
            advance = int(durations[j])
        else:
            label = int(logits[:v].argmax())
            advance = int(label == head.blank)
        decisions.append(Decision(t, label, advance))
        on_frame = on_frame + 1 if label != head.blank and advance == 0 else 0
        if on_frame >= head.max_symbols:  # the cap moves on
            advance, on_frame = 1, 0
        if label != head.blank:
            out, state = pred(torch.tensor([[label]]), state)
            pred_p = head.joint.project_pred(out[0, 0])
        t += advance
    return decisions


def _check_alignments(
    head: TransducerHead, enc: torch.Tensor, enc_lens: torch.Tensor, hyps: list[list[int]]
) -> list[list[Decision]]:
    """Greedy alignments of a batch enc[B, T, D]; their labels must be the hypotheses `hyps` of the
    batched search (so the statistics taken from them describe what the search did)."""
    alignments = [_greedy_alignment(head, enc[i, : int(enc_lens[i])]) for i in range(enc.shape[0])]
    assert [[d.label for d in a if d.label != head.blank] for a in alignments] == hyps
    return alignments


def _alignment_stats(head: TransducerHead, alignments: list[list[Decision]], chunk: int) -> dict[str, object]:
    """What a set of greedy alignments exercises in a streaming search with chunks of `chunk` frames."""
    per_frame: dict[tuple[int, int], int] = {}  # (utterance, frame) -> labels emitted on it
    for u, a in enumerate(alignments):
        for d in a:
            per_frame.setdefault((u, d.frame), 0)
            per_frame[(u, d.frame)] += d.label != head.blank
    counts = list(per_frame.values())
    decisions = [d for a in alignments for d in a]
    labels = [d for d in decisions if d.label != head.blank]
    return {
        "frames_read": len(counts),
        "blank_frames": counts.count(0),  # frames read that emitted no label
        "labels_per_frame": {n: counts.count(n) for n in sorted(set(counts))},
        "distinct_labels": len({d.label for d in labels}),
        "blank_durations": sorted(d.advance for d in decisions if d.label == head.blank),
        "label_durations": sorted(d.advance for d in labels),
        # jumps that land inside a later chunk: the next chunk's search must start past its first frame
        "jumps_into_next_chunk": sum(
            (d.frame + d.advance) // chunk > d.frame // chunk and (d.frame + d.advance) % chunk > 0 for d in decisions
        ),
    }


def _assert_mixed(head: TransducerHead, stats: dict) -> None:
    """The alignments mix blank frames, several different labels, several labels on one frame and
    (TDT) long jumps: what carrying the search state across chunks has to get right."""
    per_frame, frames = stats["labels_per_frame"], stats["frames_read"]
    assert stats["blank_frames"] >= frames // 4, stats
    assert per_frame.get(1, 0) >= 5 and per_frame.get(2, 0) >= 2, stats
    assert max(per_frame) < head.max_symbols, stats  # every frame is left by a blank, not by the cap
    assert stats["distinct_labels"] >= 8, stats
    if head.durations:
        assert sum(d > 1 for d in stats["blank_durations"]) >= 5, stats
        assert sum(d > 1 for d in stats["label_durations"]) >= 5, stats
        assert stats["label_durations"].count(0) >= 2, stats
        assert stats["jumps_into_next_chunk"] >= 2, stats


@pytest.mark.parametrize(
    "kind,arch", [("ctc", "plain"), ("rnnt", "plain"), ("tdt", "plain"), ("ctc", "8x-grouped"), ("tdt", "8x-grouped")]
)
def test_streaming_recognizer_equals_offline_greedy(kind, arch, speech_wave):
    """Audio in odd-sized blocks, batched streams of different lengths: the final hypotheses
    equal offline greedy decoding of the chunk-masked encoder output, for several chunk sizes.
    Transducer heads are shaped (_mix_transducer_head) so that the hypotheses mix blanks, labels
    and TDT jumps across chunk boundaries; the test checks that they do. Also with the Efficient
    Conformer (80 ms frames, grouped attention)."""
    model = _model(kind, 30, arch)
    waves = [speech_wave, speech_wave[: len(speech_wave) * 2 // 3], speech_wave[4000 : 4000 + len(speech_wave) // 3]]
    audio, lens = _batch(waves)
    head = next(iter(model.heads.values()))
    if kind != "ctc":
        with torch.no_grad():
            enc, enc_lens = model.encoder(*model.features(audio, lens))
        _mix_transducer_head(head, torch.cat([enc[i, : int(n)] for i, n in enumerate(enc_lens)]))
    produced = 0
    for chunk, left, block in [(4, 16, 2080), (8, -1, 5120), (16, 8, 16000)]:
        with torch.no_grad():
            feats, flens = model.features(audio, lens)
            enc, enc_lens = model.encoder(feats, flens, chunk, left)
            if kind == "ctc":
                offline = ctc_greedy_search(head(enc), enc_lens)
            else:
                offline = transducer_greedy_search(head, enc, enc_lens)
                _assert_mixed(head, _alignment_stats(head, _check_alignments(head, enc, enc_lens, offline), chunk))
            timed = run_search(build_search(head, DecodeOptions("greedy")), enc, enc_lens)
        rec = StreamingRecognizer(model, chunk_size=chunk, left_context=left)
        partial_lengths = []
        final = stream_decode(rec, waves, block, on_partial=lambda s, h, seen=partial_lengths: seen.append(len(h[0])))
        assert final == offline, (chunk, left)
        _assert_same_times(rec.results(), timed)
        assert partial_lengths == sorted(partial_lengths)  # hypotheses only grow
        # one stream alone gives the same hypothesis as in the batch
        assert stream_decode(StreamingRecognizer(model, chunk, left), waves[1:2], block) == offline[1:2]
        produced += sum(len(h) for h in final)
        assert rec.stats.rtf > 0 and rec.stats.chunk_times
    assert produced > 0  # the untrained model still emits tokens, so equality is not vacuous


def _assert_same_times(streamed: list[Hypothesis], offline: list[Hypothesis]) -> None:
    """Streamed hypotheses carry the offline search's token frames and durations (counted from
    each stream's start, not its chunk's) and, within the chunked encoder's rounding, confidences."""
    for got, want in zip(streamed, offline, strict=True):
        assert (got.tokens, got.frames, got.durations) == (want.tokens, want.frames, want.durations)
        assert got.confidence == pytest.approx(want.confidence, abs=1e-4)


def _beam_scores(state: BeamState) -> list[dict[tuple[int, ...], float]]:
    """Per utterance, each live hypothesis of a finished beam search and its score. Slots are not
    compared: which slot holds a hypothesis is no result (an emptied slot keeps its old labels)."""
    score = state.score.tolist()
    return [
        {tuple(h.tokens): s for h, s in zip(hyps, row) if s > float("-inf")} for hyps, row in zip(state.hyps, score)
    ]


@pytest.mark.parametrize("kind", ["ctc", "rnnt", "tdt"])
def test_streaming_beam_search_equals_offline_beam_search(kind, speech_wave, monkeypatch):
    """--method beam streams too: the final hypotheses equal offline beam search (CTC prefix beam,
    transducer beam) over the same encoder frames, batched and alone; for transducers, so do all
    the beam's hypotheses and, within rounding, their scores.

    A beam search sums and compares many scores, so rounding-level differences (the chunked
    encoder equals the masked offline one to ~1e-6, tested above) can flip a near tie on an
    untrained model. This test therefore runs the offline search on the encoder frames the
    recognizer produced, which isolates what streaming adds: resuming the search across
    chunks, and merging at each stream's own end."""
    model = _model(kind, 30)
    head = next(iter(model.heads.values()))
    waves = [speech_wave, speech_wave[: len(speech_wave) // 2], speech_wave[3000 : 3000 + len(speech_wave) // 4]]
    if kind != "ctc":  # blanks, labels and TDT jumps mixed, on which beam and greedy search differ
        with torch.no_grad():
            enc, enc_lens = model.encoder(*model.features(*_batch(waves)))
        _mix_transducer_head(head, torch.cat([enc[i, : int(n)] for i, n in enumerate(enc_lens)]))
    chunks: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward_chunk = model.encoder.forward_chunk

    def recording(x, x_lens, state):
        y, y_lens, state = forward_chunk(x, x_lens, state)
        chunks.append((y, y_lens))
        return y, y_lens, state

    monkeypatch.setattr(model.encoder, "forward_chunk", recording)

    def streamed_and_offline(sources, chunk, left, block):
        chunks.clear()
        rec = StreamingRecognizer(model, chunk, left, method="beam", beam=3)
        streamed = stream_decode(rec, sources, block)
        lens = sum(n for _, n in chunks)
        enc = torch.zeros(len(sources), int(lens.max()), chunks[0][0].shape[2])
        for i in range(len(sources)):
            enc[i, : lens[i]] = torch.cat([y[i, : n[i]] for y, n in chunks])
        with torch.no_grad():
            _assert_same_times(rec.results(), run_search(build_search(head, DecodeOptions("beam", 3)), enc, lens))
            if kind == "ctc":
                return streamed, ctc_prefix_beam_search(head(enc), lens, beam=3), ctc_greedy_search(head(enc), lens)
            # the whole beam, not only its best: every live hypothesis and its score equal the offline
            # search's (transducer_beam_search runs this init + continue and returns only best())
            done = torch.ones(len(sources), dtype=torch.bool)
            state = transducer_beam_continue(head, enc, lens, transducer_beam_init(head, len(sources), 3), final=done)
            got, want = _beam_scores(rec.search_state), _beam_scores(state)
            for g, w in zip(got, want):
                assert g.keys() == w.keys(), (chunk, left)
                assert all(abs(g[h] - w[h]) < TOL for h in g), (chunk, left, g, w)
            greedy = transducer_greedy_search(head, enc, lens)
            if len(sources) > 1:
                _assert_mixed(head, _alignment_stats(head, _check_alignments(head, enc, lens, greedy), chunk))
            return streamed, transducer_beam_search(head, enc, lens, beam=3), greedy

    for chunk, left, block in [(4, 16, 2080), (8, -1, 5120)]:
        streamed, offline, greedy = streamed_and_offline(waves, chunk, left, block)
        assert offline != greedy  # the beam changes the result, so streaming it is tested
        assert streamed == offline, (chunk, left)
        streamed, offline, _ = streamed_and_offline(waves[2:], chunk, left, block)  # one stream alone
        assert streamed == offline
