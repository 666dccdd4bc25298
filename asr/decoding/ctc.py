"""CTC decoding: batched greedy, and prefix beam search (resumable across chunks for streaming)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

import torch

from .confidence import entropy_confidence
from .fusion import Fusion
from .search import Hypothesis


@dataclass
class GreedyCTCState:
    """Where a CTC greedy search stands between chunks of frames (streaming)."""

    last: torch.Tensor  # [B] best token of the last frame read (-1 before any frame)
    score: torch.Tensor  # [B] log-probability of the best path so far
    tokens: list[list[int]]  # tokens emitted so far per utterance
    frames: list[list[int]]  # per token: first frame of its run (from the utterance's start)
    durations: list[list[int]]  # per token: frames in its run
    confidence: list[list[float]]  # per token: highest probability over its run
    offset: list[int]  # frames read so far per utterance

    def hypotheses(self) -> list[Hypothesis]:
        return [
            Hypothesis(list(t), float(s), [], list(f), list(d), list(c))
            for t, s, f, d, c in zip(self.tokens, self.score.tolist(), self.frames, self.durations, self.confidence)
        ]


def ctc_greedy_init(batch_size: int, device: torch.device | str = "cpu") -> GreedyCTCState:
    return GreedyCTCState(
        torch.full((batch_size,), -1, dtype=torch.long, device=device),
        torch.zeros(batch_size, device=device),
        [[] for _ in range(batch_size)],
        [[] for _ in range(batch_size)],
        [[] for _ in range(batch_size)],
        [[] for _ in range(batch_size)],
        [0] * batch_size,
    )


def ctc_greedy_continue(
    log_probs: torch.Tensor, lengths: torch.Tensor, state: GreedyCTCState, blank: int = 0
) -> GreedyCTCState:
    """Best path over the next frames log_probs[B, T, V] (lengths[B] valid): argmax per frame,
    merge repeats (also across the chunk boundary), drop blanks. Each token keeps the frames of
    its run: where it starts, how long it lasts, its highest probability on the way."""
    if log_probs.shape[1] == 0:
        return state
    best_lp, best = log_probs.max(dim=-1)  # [B, T]
    lengths = lengths.to(best.device)
    valid = torch.arange(best.shape[1], device=best.device)[None, :] < lengths[:, None]
    score = state.score + best_lp.float().masked_fill(~valid, 0.0).sum(dim=1)
    at_end = best.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0]
    last = torch.where(lengths > 0, at_end, state.last.to(best.device))
    best, prob, prev = best.cpu(), entropy_confidence(log_probs).cpu(), state.last.cpu().tolist()
    # the lists grow in place (an hour-long stream must not copy them at every chunk): the
    # state passed in is consumed
    out = GreedyCTCState(last, score, state.tokens, state.frames, state.durations, state.confidence, state.offset)
    for b, n in enumerate(lengths.tolist()):
        if n == 0:
            continue
        # runs of one argmax: a token per run that is not blank, unless it continues the last
        # run of the previous chunk
        toks, counts = torch.unique_consecutive(best[b, :n], return_counts=True)
        run = torch.repeat_interleave(torch.arange(len(toks)), counts)
        peak = torch.zeros(len(toks)).scatter_reduce(0, run, prob[b, :n], "amax", include_self=False)
        start = (counts.cumsum(0) - counts).tolist()
        for i, (tok, cnt, p) in enumerate(zip(toks.tolist(), counts.tolist(), peak.tolist())):
            if tok == blank:
                continue
            if i == 0 and tok == prev[b] and out.tokens[b]:
                out.durations[b][-1] += cnt
                out.confidence[b][-1] = max(out.confidence[b][-1], p)
                continue
            out.tokens[b].append(tok)
            out.frames[b].append(out.offset[b] + start[i])
            out.durations[b].append(cnt)
            out.confidence[b].append(p)
        out.offset[b] += n
    return out


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    Args:
        log_probs: [B, T, V]; lengths: [B]. Frames at or beyond a length are ignored.
    Returns:
        token ids per utterance.
    """
    return ctc_greedy_continue(log_probs, lengths, ctc_greedy_init(log_probs.shape[0], log_probs.device), blank).tokens


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


@dataclass
class PrefixTree:
    """One utterance's prefixes as a tree: node 0 is the empty prefix, and extending a prefix by
    a token is O(1) however long it is (a stream can run for an hour), where tuple keys would
    copy the prefix at every extension.

    Each node also keeps when its last token was emitted: `frame` (the first frame of the
    token's most probable run), `end` (the last frame on which the prefix most probably still
    sat on that token) and `conf` (the token's highest probability from `frame` to `end`).
    """

    parent: list[int] = field(default_factory=lambda: [-1])
    token: list[int] = field(default_factory=lambda: [-1])
    child: dict[tuple[int, int], int] = field(default_factory=dict)
    frame: list[int] = field(default_factory=lambda: [-1])
    end: list[int] = field(default_factory=lambda: [-1])
    conf: list[float] = field(default_factory=lambda: [0.0])
    # with fusion: the node's fusion state (None until scored) and the fused score of its tokens
    fstate: list[tuple[int, ...] | None] = field(default_factory=lambda: [None])
    fused: list[float] = field(default_factory=lambda: [0.0])

    def extend(self, node: int, tok: int) -> int:
        """The node of prefix `node` + `tok` (made on first use)."""
        key = (node, tok)
        n = self.child.get(key)
        if n is None:
            n = self.child[key] = len(self.parent)
            self.parent.append(node)
            self.token.append(tok)
            self.frame.append(-1)
            self.end.append(-1)
            self.conf.append(0.0)
            self.fstate.append(None)
            self.fused.append(0.0)
        return n

    def fuse(self, node: int, fusion: Fusion) -> None:
        """Score node's last token with `fusion` after its parent's state (once per node: a node
        is one token sequence, so its fused score never changes)."""
        if self.fstate[node] is not None:
            return
        if node == 0:
            self.fstate[0] = fusion.initial_state()
            return
        parent = self.parent[node]
        self.fuse(parent, fusion)
        delta, self.fstate[node] = fusion.score(self.fstate[parent], self.token[node])
        self.fused[node] = self.fused[parent] + delta

    def labels(self, node: int) -> list[int]:
        out = []
        while node > 0:
            out.append(self.token[node])
            node = self.parent[node]
        return out[::-1]

    def hypothesis(self, node: int, score: float) -> Hypothesis:
        """The prefix `node` as a Hypothesis with its tokens' frames, durations and confidences."""
        path = []
        while node > 0:
            path.append(node)
            node = self.parent[node]
        path.reverse()
        return Hypothesis(
            [self.token[n] for n in path],
            score,
            [],
            [self.frame[n] for n in path],
            [self.end[n] - self.frame[n] + 1 for n in path],
            [self.conf[n] for n in path],
        )


@dataclass
class PrefixBeamState:
    """Where a CTC prefix beam search stands between chunks of frames (streaming): per utterance,
    the surviving prefixes (tree nodes) with their log probabilities of ending in blank and in
    their last token, and the frames read so far."""

    beams: list[dict[int, tuple[float, float]]]
    trees: list[PrefixTree]
    offset: list[int] = field(default_factory=list)
    fusion: Fusion | None = None  # the LM / hotwords fused into the scores (asr.decoding.fusion)

    def best(self) -> list[list[int]]:
        """The most probable prefix per utterance (the partial result while streaming)."""
        return [h.tokens for h in self.hypotheses()]

    def hypotheses(self) -> list[Hypothesis]:
        """Per utterance the best prefix with its score and times, and the n-best list. The score
        is the prefix's log-probability plus, with fusion, its fused score as if it ended here."""
        out = []
        for b, tree in zip(self.beams, self.trees):
            ranked = sorted((tree.hypothesis(p, self._ended(tree, p, s)) for p, s in b.items()), key=lambda h: -h.score)
            out.append(replace(ranked[0], nbest=ranked))
        return out

    def _ended(self, tree: PrefixTree, node: int, s: tuple[float, float]) -> float:
        if self.fusion is None:
            return _logaddexp(*s)
        return _logaddexp(*s) + tree.fused[node] + self.fusion.final_score(tree.fstate[node])


def ctc_prefix_beam_init(batch_size: int, fusion: Fusion | None = None) -> PrefixBeamState:
    """Before any frame: the empty prefix, ending in blank with probability 1. `fusion`: an LM
    and/or hotwords whose scores the search adds (asr.decoding.fusion.build_fusion)."""
    trees = [PrefixTree() for _ in range(batch_size)]
    if fusion is not None:
        for tree in trees:
            tree.fuse(0, fusion)
    return PrefixBeamState([{0: (0.0, -math.inf)} for _ in range(batch_size)], trees, [0] * batch_size, fusion)


def ctc_prefix_beam_search(
    log_probs: torch.Tensor, lengths: torch.Tensor, beam: int = 4, blank: int = 0, token_prune: int | None = None
) -> list[list[int]]:
    """CTC prefix beam search (Hannun et al. 2014) without a language model.

    Each prefix keeps two scores: ending in blank and ending in its last token, so
    paths that collapse to the same prefix are summed. Per frame only the
    `token_prune` (default: beam) most likely tokens are expanded.

    Args:
        log_probs: [B, T, V]; lengths: [B].
    Returns:
        the best prefix's token ids per utterance.
    """
    state = ctc_prefix_beam_init(log_probs.shape[0])
    return ctc_prefix_beam_continue(log_probs, lengths, state, beam, blank, token_prune).best()


def ctc_prefix_beam_continue(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    state: PrefixBeamState,
    beam: int = 4,
    blank: int = 0,
    token_prune: int | None = None,
) -> PrefixBeamState:
    """Run the prefix beam search over the next frames log_probs[B, T, V] (lengths[B] valid).

    The search is frame-synchronous and its state is the beam, so frames fed in chunks give
    exactly the prefixes of one call over all of them.

    With the state's fusion, prefixes are ranked and pruned by their log-probability plus the
    fused score of their tokens (shallow fusion: lm_weight * ln p_LM, hotword bonuses), added
    once per token when a prefix is extended, not on blanks or merged repeats.

    Token times: on each frame, a surviving prefix's last token counts as emitted there when
    the paths that emit it on this frame outweigh those that had emitted it before; it still
    lasts while its paths ending in the token outweigh those ending in blank.
    """
    k = token_prune or beam
    topv, topi = log_probs.float().topk(min(k, log_probs.shape[-1]), dim=-1)
    topv, topi = topv.cpu().tolist(), topi.cpu().tolist()
    blank_lp = log_probs[..., blank].float().cpu().tolist()
    frame_conf = entropy_confidence(log_probs).cpu().tolist()
    out = []
    offsets = list(state.offset) or [0] * log_probs.shape[0]
    fusion = state.fusion
    for b in range(log_probs.shape[0]):
        beams, tree = state.beams[b], state.trees[b]
        for t in range(int(lengths[b])):
            nxt: dict[int, list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
            new: dict[int, float] = {}  # node -> log-prob mass of the paths emitting its token on this frame
            pb_t = blank_lp[b][t]
            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                e = nxt[prefix]
                e[0] = _logaddexp(e[0], total + pb_t)  # blank keeps the prefix
                for lp, tok in zip(topv[b][t], topi[b][t]):
                    if tok == blank:
                        continue
                    node = tree.extend(prefix, tok)
                    if fusion is not None:
                        tree.fuse(node, fusion)
                    ext = nxt[node]
                    if prefix and tree.token[prefix] == tok:
                        e[1] = _logaddexp(e[1], pnb + lp)  # repeat merges into the same prefix
                        came = pb + lp  # a blank separated the repeat
                    else:
                        came = total + lp
                    ext[1] = _logaddexp(ext[1], came)
                    new[node] = _logaddexp(new.get(node, -math.inf), came)
            kept = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]) - tree.fused[kv[0]])[:beam]
            g = offsets[b] + t
            for node, (sb, snb) in kept:
                if node in new:
                    mass = new[node]
                    if mass > _logaddexp(sb, _logsubexp(snb, mass)):  # emitted here, most probably
                        tree.frame[node], tree.end[node], tree.conf[node] = g, g, frame_conf[b][t]
                        continue
                if node and snb > sb and tree.frame[node] >= 0:  # still on its last token
                    tree.end[node] = g
                    tree.conf[node] = max(tree.conf[node], frame_conf[b][t])
            beams = {p: (s[0], s[1]) for p, s in kept}
        out.append(beams)
        offsets[b] += int(lengths[b])
    return PrefixBeamState(out, state.trees, offsets, fusion)


def _logsubexp(a: float, b: float) -> float:
    """log(exp(a) - exp(b)) for a >= b (-inf when equal): the rest of a sum once one part is known."""
    if b == -math.inf:
        return a
    if b >= a:
        return -math.inf
    return a + math.log1p(-math.exp(b - a))


class CTCGreedySearch:
    """The Search interface (asr.decoding.search) over a CTC head's log-probs, best path."""

    def __init__(self, head):
        self.head = head

    def init(self, batch_size: int, device: torch.device | str) -> GreedyCTCState:
        return ctc_greedy_init(batch_size, device)

    def advance(
        self, state: GreedyCTCState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> GreedyCTCState:
        return ctc_greedy_continue(self.head(enc), enc_lens, state, self.head.blank)

    def hypotheses(self, state: GreedyCTCState) -> list[Hypothesis]:
        return state.hypotheses()


class CTCPrefixBeamSearch:
    """The Search interface over a CTC head's log-probs, prefix beam search with `beam` prefixes
    (and an LM / hotwords fused, if given)."""

    def __init__(self, head, beam: int, fusion: Fusion | None = None):
        self.head, self.beam, self.fusion = head, beam, fusion

    def init(self, batch_size: int, device: torch.device | str) -> PrefixBeamState:
        return ctc_prefix_beam_init(batch_size, self.fusion)

    def advance(
        self, state: PrefixBeamState, enc: torch.Tensor, enc_lens: torch.Tensor, final: torch.Tensor
    ) -> PrefixBeamState:
        return ctc_prefix_beam_continue(self.head(enc), enc_lens, state, self.beam, self.head.blank)

    def hypotheses(self, state: PrefixBeamState) -> list[Hypothesis]:
        return state.hypotheses()
