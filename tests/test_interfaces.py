"""The interfaces of issue 12: encoders, heads and their searches, decoding options, layering.

What the other test files check per implementation (streaming == offline, searches against
references), this file checks across all of them: every encoder and head kind satisfies the
one interface of its role, every registered search returns scored hypotheses, options are
validated once with clear errors, and the package's import layering holds.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch

from asr.decoding import DecodeOptions, Hypothesis, build_search, run_search
from asr.decoding.registry import SEARCHES, methods
from asr.nn.encoders import ENCODERS, Encoder, StreamingEncoder, build_encoder
from asr.nn.heads import HEADS, Head, build_head
from asr.nn.heads.transducer_loss import build_transducer_loss

ASR = Path(__file__).resolve().parent.parent / "asr"
V = 7
SMALL = {
    "conformer": {"d_model": 16, "num_layers": 1, "num_heads": 2, "subsampling_channels": 4, "causal": True},
    "lstm": {"d_model": 16, "hidden": 8, "num_layers": 1, "subsampling_channels": 4},
    "mingru": {"d_model": 16, "num_layers": 1, "subsampling_channels": 4},
    "minlstm": {"d_model": 16, "num_layers": 1, "subsampling_channels": 4},
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_implements_the_streaming_interface_with_one_signature(name):
    """One init_state(batch, chunk_size, left_context) / chunk_input_frames(state) / forward_chunk for
    all encoders: a runner written once against the protocol streams each of them exactly."""
    torch.manual_seed(0)
    enc = build_encoder(name, in_features=20, **SMALL[name]).eval()
    assert isinstance(enc, Encoder) and isinstance(enc, StreamingEncoder) and enc.streams
    x, lens = torch.randn(2, 70, 20), torch.tensor([70, 41])
    with torch.no_grad():
        ref, ref_lens = enc(x, lens, 3, -1) if name == "conformer" else enc(x, lens)
        state = enc.init_state(2, 3, -1)
        outs, pos = [], 0
        while pos < x.shape[1]:
            n = enc.chunk_input_frames(state)
            chunk = torch.nn.functional.pad(x[:, pos : pos + n], (0, 0, 0, max(0, pos + n - x.shape[1])))
            y, y_lens, state = enc.forward_chunk(chunk, (lens - pos).clamp(0, n), state)
            outs.append((y, y_lens))
            pos += n
    for b in range(2):
        got = torch.cat([y[b, : int(n[b])] for y, n in outs])
        assert got.shape[0] == int(ref_lens[b]) and (got - ref[b, : int(ref_lens[b])]).abs().max() < 1e-4
    with pytest.raises(ValueError, match="chunk_size > 0"):
        enc.init_state(1, 0, -1)


def test_encoders_that_read_the_future_say_they_do_not_stream():
    assert not build_encoder("conformer", in_features=20, **{**SMALL["conformer"], "causal": False}).streams
    assert not build_encoder("lstm", in_features=20, **SMALL["lstm"], bidirectional=True).streams


def _heads() -> dict[str, Head]:
    torch.manual_seed(0)
    heads = {
        "ctc": build_head("ctc", 8, V),
        "rnnt": build_head("transducer", 8, V, pred_dim=8, joint_dim=8),
        "tdt": build_head("transducer", 8, V, loss={"kind": "tdt", "durations": [0, 1, 2]}, pred_dim=8, joint_dim=8),
    }
    for h in heads.values():  # peaky outputs, so searches emit labels and beams differ from greedy
        for p in h.parameters():
            torch.nn.init.normal_(p, std=1.5)
    return {k: h.eval() for k, h in heads.items()}


def test_every_head_kind_is_registered_with_greedy_and_beam():
    assert sorted(HEADS) == sorted({k for k, _ in SEARCHES})
    for kind in HEADS:
        assert methods(kind) == ["beam", "greedy"]


@pytest.mark.parametrize("name", ["ctc", "rnnt", "tdt"])
def test_searches_return_scored_hypotheses_and_greedy_scores_its_path(name):
    """Greedy: the score is the log-probability of the decisions taken; with beam 1 the beam
    search takes the same decisions (documented), so both scores agree: two independent
    computations of one number. Beam: an n-best list, best first, led by the hypothesis."""
    head = _heads()[name]
    g = torch.Generator().manual_seed(3)
    enc, lens = torch.randn(3, 12, 8, generator=g), torch.tensor([12, 7, 1])
    with torch.no_grad():
        greedy = run_search(build_search(head, DecodeOptions("greedy", max_symbols=3)), enc, lens)
        beam1 = run_search(build_search(head, DecodeOptions("beam", 1, max_symbols=3)), enc, lens)
        beam4 = run_search(build_search(head, DecodeOptions("beam", 4, max_symbols=3)), enc, lens)
        if name == "ctc":  # the best path's log-probability is the sum of each frame's best
            lp = head(enc)
            for b, n in enumerate(lens.tolist()):
                assert greedy[b].score == pytest.approx(float(lp[b, :n].max(-1).values.sum()), abs=1e-4)
    assert sum(len(h.tokens) for h in greedy) > 0
    for g_h, b1, b4 in zip(greedy, beam1, beam4):
        assert isinstance(g_h, Hypothesis) and g_h.nbest == []
        assert g_h.score <= 0 and math.isfinite(g_h.score)
        if name != "ctc":  # CTC prefix beam sums paths; its beam-1 score is not a path's
            assert b1.tokens == g_h.tokens and b1.score == pytest.approx(g_h.score, abs=1e-4)
        scores = [h.score for h in b4.nbest]
        assert (b4.nbest[0].tokens, b4.nbest[0].score) == (b4.tokens, b4.score)
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in b4.nbest}) == len(b4.nbest) <= 4
        assert math.log(sum(math.exp(s) for s in scores)) <= 1e-5  # probabilities of distinct outputs
    assert any(len(h.nbest) > 1 for h in beam4)


def test_searches_decode_by_the_joint_layout_not_by_the_loss():
    """A TDT joint decodes as TDT, whatever trains it: searches read head.durations."""
    heads = _heads()
    assert heads["tdt"].durations == (0, 1, 2) and heads["rnnt"].durations == ()
    assert heads["tdt"].joint.out.out_features == V + 3


def test_decode_options_are_validated_once_with_clear_errors():
    assert DecodeOptions() == DecodeOptions("greedy", 4, None, None)
    o = DecodeOptions("beam", 8, "ctc", 2)
    assert o.replace(beam=None, method="greedy") == DecodeOptions("greedy", 8, "ctc", 2)
    assert DecodeOptions.from_dict(o.to_dict()) == o and DecodeOptions.from_dict(None) == DecodeOptions()
    for bad, msg in [
        ({"method": "viterbi"}, "unknown decoding method 'viterbi'"),
        ({"beam": 0}, "beam must be"),
        ({"beam": -3}, "beam must be"),
        ({"max_symbols": 0}, "max_symbols must be"),
        ({"head": ""}, "head must be"),
        ({"beams": 4}, r"unknown decoding options \['beams'\]"),
    ]:
        with pytest.raises(ValueError, match=msg):
            DecodeOptions.from_dict(bad)
    with pytest.raises(AttributeError):
        o.beam = 2  # frozen
    with pytest.raises(ValueError, match="no 'viterbi' search|unknown decoding method"):
        build_search(_heads()["ctc"], DecodeOptions("viterbi"))


def test_hydra_decode_group_is_the_dataclass():
    """conf/decode/*.yaml build on DecodeOptions: its defaults fill the config, types are checked,
    and unknown fields are rejected when composing."""
    from omegaconf import OmegaConf

    from asr.train import compose

    assert OmegaConf.to_container(compose([]).decode) == DecodeOptions().to_dict()
    beam = compose(["decode=beam", "decode.head=ctc"]).decode
    assert DecodeOptions.from_dict(OmegaConf.to_container(beam)) == DecodeOptions("beam", 8, "ctc", None)
    for bad in (["decode.beam=many"], ["decode.beams=4"]):
        with pytest.raises(Exception, match="beam"):
            compose(bad)


def test_optimizer_defaults_live_in_one_group():
    from asr.train import CONF_DIR, compose

    assert not any(re.search(r"^optim:", p.read_text(), re.M) for p in (CONF_DIR / "model").glob("*.yaml"))
    assert compose(["model=conformer_tdt"]).optim.lr == pytest.approx(3e-3)
    assert compose(["model=lstm_transducer"]).optim.lr == pytest.approx(2e-3)  # its own group option
    assert compose(["model=lstm_transducer", "optim.lr=1e-3"]).optim.lr == pytest.approx(1e-3)


def test_transducer_loss_specs():
    pruned = build_transducer_loss({"kind": "pruned_rnnt", "prune_range": 4}, 8, 6, V)
    assert pruned.prune_range == 4 and pruned.durations == () and pruned.simple_am.in_features == 8
    assert build_transducer_loss("tdt", 8, 6, V).durations == (0, 1, 2, 3, 4)
    assert build_transducer_loss("rnnt", 8, 6, V).symbols_per_frame is None
    for topology in ("modified", "rna", "constrained"):
        loss = build_transducer_loss({"kind": "pruned_rnnt", "topology": topology}, 8, 6, V)
        assert loss.topology == topology and loss.symbols_per_frame == 1
    pruned_tdt = build_transducer_loss({"kind": "pruned_tdt", "durations": [0, 1, 2]}, 8, 6, V)
    assert pruned_tdt.durations == (0, 1, 2) and pruned_tdt.simple_am.out_features == V + 3
    assert pruned_tdt.symbols_per_frame is None
    for spec, msg in [
        ("ctc", "must be one of"),
        ({"kind": "rnnt", "sigma": 0.1}, "rnnt loss has no option sigma; its options: topology, viterbi"),
        ({"kind": "rnnt", "topology": "monotone"}, "must be one of"),
        ({"kind": "rnnt", "topology": "modified", "viterbi": True}, "regular lattice only"),
        ({"kind": "pruned_rnnt", "viterbi": True}, "pruned_rnnt loss has no option viterbi"),
        ({"kind": "pruned_tdt", "viterbi": True}, "pruned_tdt loss has no option viterbi"),
        ({"kind": "tdt", "durations": [0]}, "blank may not take duration 0"),
        ({"kind": "pruned_rnnt", "prune_range": 1}, "prune_range"),
        ({"kind": "pruned_tdt", "durations": [0, 2]}, "needs duration 1"),
        ({"kind": "pruned_tdt", "omega": 2.0}, "omega"),
        ({"kind": "pruned_tdt", "topology": "modified"}, "pruned_tdt loss has no option topology"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_transducer_loss(spec, 8, 6, V)


# ---- layering -------------------------------------------------------------------------
# Lower layers never import higher ones. Losses are functions the heads call, so they sit below
# nn; searches read heads, so decoding sits above nn; the model composes them; command modules
# use the model; the CLI only parses arguments.
LAYERS = [
    ("asr", "asr._ext", "asr._C", "asr.problems", "asr.metrics", "asr.fsa", "asr.configs"),
    ("asr.data",),
    ("asr.lm",),  # n-gram LMs over the tokenizer's ids; searches fuse them
    ("asr.losses",),
    ("asr.nn",),
    ("asr.decoding",),
    ("asr.model", "asr.guards"),  # guards: the Lightning callbacks train adds to the model
    (
        "asr.train",
        "asr.transcribe",
        "asr.longform",
        "asr.transcripts",
        "asr.stream",
        "asr.align",
        "asr.export",
        "asr.onnx_model",
    ),
    ("asr.cli",),
]


def _layer(module: str) -> int:
    top = ".".join(module.split(".")[:2])
    return next(i for i, names in enumerate(LAYERS) if top in names)


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m == "asr" or m.startswith("asr.")}


def test_layering_has_no_arrow_back_up():
    checked, upward = 0, []
    for path in sorted(ASR.rglob("*.py")):
        parts = list(path.relative_to(ASR.parent).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for dep in _imports(path, module):
            checked += 1
            if _layer(dep) > _layer(module):
                upward.append(f"{module} imports {dep}")
    assert checked > 50 and not upward, upward


def test_no_dispatch_on_head_or_encoder_classes_outside_the_heads_package():
    pattern = re.compile(r"isinstance\([^)]*(Head|Encoder)\b|hasattr\((enc|head|self\.head)\b|loss_kind")
    hits = [
        f"{p.relative_to(ASR.parent)}:{i}"
        for p in ASR.rglob("*.py")
        if "nn/heads" not in p.as_posix()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits


def test_streaming_runner_refuses_encoders_that_do_not_stream():
    """The runner asks the encoder (`streams`), not its config: a non-causal Conformer and a
    bidirectional LSTM are refused with the reason and the config to train instead."""
    from asr.decoding.streaming import StreamingRecognizer
    from asr.model import ASRModel

    for name, extra in (("conformer", {"causal": False}), ("lstm", {"bidirectional": True})):
        model = ASRModel(V, {"name": name, **SMALL[name], **extra}, {"ctc": {"kind": "ctc"}})
        with pytest.raises(ValueError, match="reads future frames.*conformer_ctc_streaming"):
            StreamingRecognizer(model, 4, 8)
