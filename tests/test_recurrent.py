"""LSTM, minGRU and minLSTM encoders: the parallel scan equals step-by-step recurrence,
padding never changes an utterance's output, and gradients reach every parameter."""

import pytest
import torch

from asr.nn.encoders import build_encoder
from asr.nn.encoders.recurrent import MinRNN, log_space_scan

SMALL = dict(in_features=40, d_model=24, num_layers=2, dropout=0.0, subsampling_channels=8)


def test_log_space_scan_equals_the_recurrence():
    torch.manual_seed(0)
    a = torch.rand(2, 50, 3, dtype=torch.float64) * 0.98 + 0.01
    b = torch.rand(2, 50, 3, dtype=torch.float64) * 3
    h0 = torch.rand(2, 3, dtype=torch.float64)
    h, ref = h0, []
    for t in range(50):
        h = a[:, t] * h + b[:, t]
        ref.append(h)
    assert torch.allclose(log_space_scan(a.log(), b.log(), h0), torch.stack(ref, 1), rtol=1e-10)
    # no initial state (h0 = 0) is exact too
    assert torch.allclose(log_space_scan(a.log(), b.log(), torch.zeros_like(h0))[:, 0], b[:, 0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_min_rnn_scan_equals_step_by_step_and_chunking(cell):
    torch.manual_seed(0)
    x = torch.randn(3, 150, 8)
    valid = torch.arange(150)[None] < torch.tensor([150, 97, 3])[:, None]
    rnn = MinRNN(8, 5, cell, scan_chunk=150)
    h_full, last_full = rnn(x, valid, torch.zeros(3, 5))
    rnn.scan_chunk = 16  # blocks carry the state: same result
    h_chunk, last_chunk = rnn(x, valid, torch.zeros(3, 5))
    assert torch.allclose(h_full, h_chunk, atol=1e-5) and torch.allclose(last_full, last_chunk, atol=1e-5)
    h = torch.zeros(3, 5)
    for t in range(150):
        h = torch.where(valid[:, t, None], rnn.step(x[:, t], h), h)
        assert torch.allclose(h_chunk[valid[:, t], t], h[valid[:, t]], atol=1e-5)
    assert torch.allclose(h, last_chunk, atol=1e-5)  # final state = state at each utterance's last frame
    assert (h_chunk > 0).all()  # g() keeps the state positive, as the log-space scan needs


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_min_rnn_encoder_scan_equals_streaming_steps(name):
    """The encoder stack run by the parallel scan equals the frame-by-frame (streaming) path,
    and a state carried across two halves equals one pass."""
    torch.manual_seed(0)
    enc = build_encoder(name, **SMALL, scan_chunk=8).eval()
    x, lens = torch.randn(3, 160, 40), torch.tensor([160, 101, 30])
    y, ylens = enc.subsampling(x, lens)
    scan, s_scan = enc.recurrent(y, ylens)
    step, s_step = enc.recurrent(y, ylens, step_by_step=True)
    assert torch.allclose(scan, step, atol=1e-5) and torch.allclose(s_scan, s_step, atol=1e-5)
    first, s1 = enc.recurrent(y[:1, :20], torch.tensor([20]))
    second, _ = enc.recurrent(y[:1, 20:], torch.tensor([int(ylens[0]) - 20]), state=s1)
    assert torch.allclose(torch.cat([first, second], 1), scan[:1], atol=1e-5)
    assert torch.allclose(enc(x, lens)[0], scan, atol=1e-6)


@pytest.mark.parametrize(
    "name,kw",
    [
        ("lstm", {"bidirectional": False, "hidden": 16}),
        ("lstm", {"bidirectional": True, "hidden": 16}),
        ("mingru", {}),
        ("minlstm", {}),
    ],
)
def test_recurrent_output_does_not_depend_on_padding(name, kw):
    torch.manual_seed(0)
    enc = build_encoder(name, **SMALL, **kw).eval()
    short = torch.randn(1, 57, 40)
    batch = torch.randn(2, 140, 40) * 5
    batch[1, :57] = short[0]
    y_alone, n = enc(short, torch.tensor([57]))
    y_batch, n_batch = enc(batch, torch.tensor([140, 57]))
    n = int(n)
    assert y_batch.shape[-1] == enc.output_dim and int(n_batch[1]) == n
    assert torch.allclose(y_batch[1, :n], y_alone[0, :n], atol=1e-5)
    assert y_batch[1, n:].abs().sum() == 0


@pytest.mark.parametrize("name,kw", [("lstm", {"bidirectional": True, "hidden": 16}), ("mingru", {}), ("minlstm", {})])
def test_recurrent_encoders_give_gradients(name, kw):
    torch.manual_seed(0)
    enc = build_encoder(name, **SMALL, **kw)
    y, lens = enc(torch.randn(2, 90, 40), torch.tensor([90, 50]))
    y.pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


def test_unidirectional_lstm_is_causal_after_subsampling():
    """Changing late input frames leaves earlier outputs alone (a bidirectional one changes them)."""
    torch.manual_seed(0)
    x = torch.randn(1, 120, 40)
    x2 = x.clone()
    x2[:, 80:] += 3.0
    lens = torch.tensor([120])
    for bi in (False, True):
        enc = build_encoder("lstm", **SMALL, hidden=16, bidirectional=bi).eval()
        same = torch.allclose(enc(x, lens)[0][:, :15], enc(x2, lens)[0][:, :15], atol=1e-6)
        assert same is (not bi)
