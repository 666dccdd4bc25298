"""The `asr` command line: prepare | train | transcribe | stream | align | score | export | lm."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .data.sizes import SIZES as SYNTH_SIZES

EXAMPLES = {
    "prepare": """examples:
  asr prepare librispeech --root /data/LibriSpeech --out data/librispeech/manifests
  asr prepare librispeech --root /data/LibriSpeech --out data/ls \
      --splits train-clean-100 dev-clean test-clean --tokenizer char
  asr prepare synthetic --corpus-dir data/synthetic/LibriSpeech --out data/synthetic/manifests --size demo
  asr prepare synthetic --text open --size small --corpus-dir data/open/LibriSpeech --out data/open/manifests
      # open-vocabulary English (~10 h of training audio, BPE 500); an interrupted synthesis resumes
  asr prepare librispeech --root /data/LibriSpeech --out data/ls --check-audio header --jobs 16

Bad input is named (audio path, or trans.txt:LINE) and counted, never fatal. Skipped: missing,
unreadable, empty or truncated audio, NaN/Inf samples, non-UTF-8 or malformed transcript lines,
empty transcripts, repeated ids (the first is kept), audio without a line and lines without
audio. Kept and counted: other sample rates (resampled), several channels (mixed down),
8-bit or float samples, float samples beyond [-1, 1], characters outside the tokenizer and
transcripts too long for their audio (T shorter than U at --encoder-frame-ms; training drops
both). prepare_report.txt holds the counts per split and then every message.""",
    "train": """examples:
  asr train                                   # conf/train.yaml defaults (synthetic data, conformer_ctc)
  asr train data=synthetic model=conformer_ctc trainer.max_epochs=20 exp_dir=exp/x
  asr train exp_dir=exp/x resume=true         # continue from exp/x/checkpoints/last.ckpt
  asr train data=librispeech trainer=gpu model.encoder.num_layers=12
  asr train model=conformer_tdt exp_dir=exp/tdt       # any model config, see model: below
  asr train model=conformer_transducer model/encoder=lstm   # swap the encoder of a model

Overrides use Hydra syntax (key=value, group=option). Config groups live in conf/:
{groups}
Outputs in exp_dir: checkpoints/ (last.ckpt, best by val_wer), best.ckpt, config.yaml,
tb/ (TensorBoard: tensorboard --logdir exp_dir/tb) and csv/version_N/metrics.csv.""",
    "transcribe": """examples:
  asr transcribe --ckpt exp/x/best.ckpt a.flac b.wav          # prints "utt-id TEXT" lines
  asr transcribe --ckpt exp/x/best.ckpt --data data/LibriSpeech/test-clean --out exp/x/hyp.txt
  asr transcribe --ckpt exp/x/best.ckpt --data DIR/test-clean --out hyp.txt --method beam --beam 8
  asr transcribe --ckpt exp/hybrid/best.ckpt --data DIR/test-clean --out hyp_ctc.txt --head ctc
  asr transcribe --onnx exp/x/onnx --data DIR/test-clean --out hyp.txt   # an `asr export` folder, onnxruntime
  asr transcribe --ckpt exp/x/best.ckpt --timestamps a.wav                  # JSON lines: words, times, confidence
  asr transcribe --ckpt exp/x/best.ckpt --data DIR/test-clean --format ctm --out exp/x/words.ctm
  asr transcribe --ckpt exp/x/best.ckpt --format srt --out subs/ talk.wav   # subs/talk.srt
  asr transcribe --ckpt exp/x/best.ckpt --method beam --lm lm.arpa --lm-weight 0.6 --ilm-weight 0.3 a.wav
  asr transcribe --ckpt exp/x/best.ckpt --method beam --hotwords hot.txt --format json a.wav
  asr transcribe --ckpt exp/x/best.ckpt lecture.flac --format srt --out subs/  # a file of any length

--method/--beam/--head/--max-symbols override the decode options saved in the checkpoint
(conf/decode/ at training time: decode.method, decode.beam, decode.head, decode.max_symbols).
With --onnx the exported graphs decode through onnxruntime (no PyTorch model): CTC greedily, a
transducer (stateless or LSTM predictor, RNN-T or TDT) greedily with at most --max-symbols labels
a frame (default 1, as sherpa-onnx), making the choices of `--method greedy`; an attention export
(`asr export --head attention`) as `--method attention_rescoring` (--beam, --ctc-weight,
--reverse-weight override the options it was exported with).

Audio that is missing, unreadable, empty, truncated or holds NaN/Inf samples is named on
stderr, counted and skipped; the other files are decoded. A checkpoint that is missing,
truncated, not a checkpoint, or another model's is an error naming it and what is wrong.""",
    "stream": """examples:
  asr stream --ckpt exp/stream/best.ckpt a.wav b.flac              # partial hypotheses as they grow, then final
  asr stream --ckpt exp/stream/best.ckpt --chunk-ms 160 --left-context-ms 1280 a.wav
  asr stream --ckpt exp/stream/best.ckpt --data DIR/test-clean --out exp/stream/hyp_320ms.txt
  asr stream --ckpt exp/stream/best.ckpt --method beam --beam 4 a.wav  # beam search, continued chunk by chunk
  asr stream --ckpt exp/stream/best.ckpt --format json a.wav            # final words with times and confidence
  asr stream --ckpt exp/stream/best.ckpt --method beam --lm lm.arpa --hotwords hot.txt a.wav

Each file is read block by block (one chunk of audio per block, as a live source would
deliver it) and decoded chunk by chunk with the encoder's caches; several files stream
as one batch. The final hypotheses equal offline decoding (greedy, or beam search with
--method beam) with the same chunk mask. Needs a streaming model (causal Conformer such as
model=conformer_ctc_streaming, minGRU/minLSTM, or a unidirectional LSTM). At the end:
algorithmic latency (the chunk plus the front-end's look-ahead), compute time per chunk,
and the real-time factor. A file that fails midway (truncated, NaN/Inf samples in a block)
stops its own stream only: it is named and counted and gets no final line; the others finish.""",
    "align": """examples:
  asr align --ckpt exp/hybrid/best.ckpt --data data/synthetic/LibriSpeech/test-clean --out exp/hybrid/align
  asr align --ckpt exp/ctc/best.ckpt --data DIR/dev-clean --out ali --plot 5

Writes OUT/words.ctm and OUT/tokens.ctm ("utt-id 1 start duration text", seconds) from
the Viterbi path of each transcript through the CTC head's log-probs (any CTC head:
conformer_ctc, or the ctc head of a hybrid). Utterances whose transcript has characters
outside the vocabulary, or more tokens than the audio has frames, are skipped and counted.""",
    "export": """examples:
  asr export --ckpt exp/x/best.ckpt --out exp/x/onnx
  asr export --ckpt exp/hybrid/best.ckpt --out exp/hybrid/onnx_ctc --head ctc
  asr export --ckpt exp/ctc_att/best.ckpt --out exp/ctc_att/onnx_att --head attention
  asr export --ckpt exp/stream/best.ckpt --out exp/stream/onnx_320ms --streaming --chunk-ms 320

Writes the ONNX graphs in sherpa-onnx's formats (CTC: model.onnx, the zipformer2_ctc interface;
stateless-predictor transducer: encoder.onnx, decoder.onnx, joiner.onnx, the icefall transducer),
tokens.txt, tokenizer.model and README.md with the sherpa-onnx command that decodes them. The
graphs take raw fbank: the global CMVN is inside. The encoder graph is checked against PyTorch on
random features (max |difference| printed). TDT heads (the joiner adds the duration logits) and
LSTM predictors (the decoder carries h, c) are exported for `asr transcribe --onnx` only:
sherpa-onnx's transducers cannot run them (the export's README.md says why). So is an attention
head (--head attention): encoder.onnx gives the CTC head's log-probs and the decoder's memory,
attention_decoder.onnx (and _r2l.onnx) scores whole hypotheses, and `asr transcribe --onnx`
rescores the CTC prefix beam n-best as --method attention_rescoring does. Heads without an export
(TAED: its predictor is the decoder) are an error naming the head and why.

--streaming writes a causal Conformer transducer (model=conformer_transducer_streaming) as
sherpa-onnx's streaming `conformer` type: encoder.onnx is one chunk step with attention and conv
caches, at --chunk-ms and a fixed --left-context-ms (metadata T, decode_chunk_len, left_context,
...); its output equals `asr stream` at the same chunk and left context (checked over 5 chunks).""",
    "score": """examples:
  asr score data/manifests/test-clean.ref.txt exp/x/hyp.txt
  asr score ref.txt hyp.txt --report exp/x/errors.txt --plot exp/x/wer_by_length.png
  asr score ref.txt hyp.txt --cer

Both files hold "utt-id TEXT" lines. Case and whitespace are normalized. A missing
hypothesis counts as all deletions (with a warning naming it); extra hypotheses are
reported and ignored. An id given twice in one file is an error naming both lines (which
text to score would be a guess), as are a missing file and a line that is not UTF-8.""",
    "lm": """examples:
  asr lm train --order 3 --text data/lm_text.txt --tokenizer data/synthetic/manifests/tokenizer_char.model \\
      --out exp/lm/lm.arpa
  asr lm train --order 5 --text data/synthetic/manifests/train-clean.ref.txt --skip-ids \\
      --tokenizer exp/x/best.ckpt --out exp/lm/tokens5.arpa     # the checkpoint's own tokenizer
  asr lm perplexity --lm exp/lm/lm.arpa --tokenizer exp/x/best.ckpt --text test.txt

The LM is over the acoustic model's tokens (sentencepiece pieces or characters), not words:
beam searches extend hypotheses a token at a time and score every extension with it. Give
--tokenizer the model's tokenizer (asr prepare's tokenizer_*.model, or the checkpoint). Its
order counts tokens, so BPE and character tokenizers want higher orders than a word LM
(e.g. 4-6 for BPE 500, 6-10 for characters). Interpolated modified Kneser-Ney, written as a
back-off ARPA file whose words are the tokenizer's pieces (readable by KenLM too). Lines
with characters the tokenizer cannot encode are skipped and named (file:line).""",
}


def _conf_groups() -> str:
    from .train import CONF_DIR

    lines = []
    for g in sorted(p for p in CONF_DIR.rglob("*") if p.is_dir()):
        opts = ", ".join(sorted(f.stem for f in g.glob("*.yaml")))
        if opts:
            lines.append(f"  {g.relative_to(CONF_DIR).as_posix()}: {opts}")
    return "\n".join(lines)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.librispeech import CheckOptions, prepare_librispeech

    if args.corpus == "synthetic":
        from .data.synthetic import synthesize_corpus

        size = args.size or ("demo" if args.text == "grammar" else "small")
        if size not in SYNTH_SIZES[args.text]:
            raise SystemExit(
                f"asr prepare synthetic: --size {size} does not exist for --text {args.text}; "
                f"choose from {sorted(SYNTH_SIZES[args.text])}"
            )
        corpus = Path(args.corpus_dir)
        synthesize_corpus(corpus, SYNTH_SIZES[args.text][size], seed=args.seed, jobs=args.jobs, text=args.text)
        if (corpus / "TEXT.txt").exists():
            print((corpus / "TEXT.txt").read_text(), end="")
        root = corpus
        # a 150-word grammar needs no subwords; open vocabulary is what BPE is for
        tokenizer = args.tokenizer or ("char" if args.text == "grammar" else "bpe")
    else:
        if not args.root:
            raise SystemExit("asr prepare librispeech: --root is required")
        root = Path(args.root)
        tokenizer = args.tokenizer or "bpe"
    try:
        check = CheckOptions(audio=args.check_audio, jobs=args.jobs, encoder_frame_ms=args.encoder_frame_ms)
    except ValueError as e:
        raise SystemExit(f"asr prepare: {e}") from e
    out = prepare_librispeech(
        root,
        args.out,
        splits=args.splits,
        tokenizer=tokenizer,
        vocab_size=args.vocab_size,
        tokenizer_path=args.tokenizer_model,
        check=check,
    )
    print(f"manifests written to {args.out}; tokenizer {out['tokenizer']}")
    return 0


def cmd_train(args: argparse.Namespace, overrides: list[str]) -> int:
    from .guards import TrainingDiverged
    from .model import CheckpointError
    from .train import compose, run_train

    cfg = compose(overrides, config_dir=args.config_dir) if args.config_dir else compose(overrides)
    try:
        best = run_train(cfg)
    except (TrainingDiverged, CheckpointError) as e:
        raise SystemExit(f"asr train: {e}") from e
    print(f"best checkpoint: {best}")
    return 0


def _inference_model(args: argparse.Namespace):
    """(model, device) for the decoding commands: --device (default cuda if available), --threads, --ckpt."""
    import torch

    from .model import CheckpointError, load_model

    device = getattr(args, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return load_model(args.ckpt, map_location=device), device
    except (FileNotFoundError, CheckpointError) as e:  # the message says it all: no traceback
        raise SystemExit(f"asr {args.command}: {e}") from e


def _decode_options(args: argparse.Namespace, model):
    """The checkpoint's decode options with the command's --head/--method/--beam/--max-symbols,
    validated once; a clear error naming the checkpoint otherwise."""
    if args.head and args.head not in model.heads:
        raise SystemExit(
            f"asr {args.command}: {args.ckpt} has no head {args.head!r}; its heads are {list(model.heads)}"
        )
    try:
        options = model.decode_options_with(
            method=args.method,
            beam=args.beam,
            head=args.head,
            max_symbols=args.max_symbols,
            ctc_weight=args.ctc_weight,
            transducer_weight=args.transducer_weight,
            reverse_weight=args.reverse_weight,
            lm=args.lm,
            lm_weight=args.lm_weight,
            ilm_weight=args.ilm_weight,
            hotwords=args.hotwords,
            hotword_boost=args.hotword_boost,
            skip_blank=args.skip_blank,
        )
        # the files load once here, so a bad line is named before decoding; frame skipping is checked
        # against the model's heads
        if options.fusion.active or options.skip_blank is not None:
            model.search(options)
        return options
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"asr {args.command}: {e}") from e


def _input_items(args: argparse.Namespace):
    """(utt_id, path) items of --data or the FILEs, and the problems found checking them."""
    from .problems import Problems
    from .transcribe import file_items, split_items

    if args.data:
        items, _, problems = split_items(args.data, progress=not args.quiet)
        return items, problems
    if not args.files:
        raise SystemExit(f"asr {args.command}: give audio FILEs or --data DIR")
    problems = Problems()
    return file_items(args.files, problems), problems


def _onnx_transcriber(args: argparse.Namespace):
    """(transcribe(audio, lens) -> texts, progress label) of an `asr export` folder (--onnx)."""
    from .onnx_model import OnnxDecodeOptions, OnnxExportError, OnnxModel

    fused = ("lm", "lm_weight", "ilm_weight", "hotwords", "hotword_boost")
    ignored = [f for f in ("method", "head", "transducer_weight", "skip_blank", *fused) if getattr(args, f)]
    if ignored:
        raise SystemExit(
            f"asr transcribe --onnx: the export decodes as it was exported; drop --{ignored[0].replace('_', '-')}"
        )
    try:
        options = OnnxDecodeOptions(args.max_symbols or 1, args.beam, args.ctc_weight, args.reverse_weight)
        model = OnnxModel(args.onnx, threads=args.threads or 1, options=options)
    except (OnnxExportError, ValueError) as e:
        raise SystemExit(f"asr transcribe: {e}") from e
    if model.format != "attention":
        given = [f for f in ("beam", "ctc_weight", "reverse_weight") if getattr(args, f) is not None]
        if given:
            raise SystemExit(
                f"asr transcribe --onnx: a {model.format} export decodes greedily; "
                f"drop --{given[0].replace('_', '-')} (it rescores attention exports)"
            )
    return model.transcribe, f"decode (onnx {model.format})"


def cmd_transcribe(args: argparse.Namespace) -> int:
    from .decoding.timestamps import Transcript
    from .transcribe import decode_batches, transcribe_items
    from .transcripts import TIMED

    fmt = _output_format(args)
    if args.onnx:
        if fmt in TIMED:
            raise SystemExit(f"asr transcribe: --format {fmt}: --onnx gives no word times yet; decode with --ckpt")
        transcribe, desc = _onnx_transcriber(args)
        items, problems = _input_items(args)
        t0 = time.perf_counter()
        texts, load_problems = decode_batches(transcribe, items, args.max_duration, desc, progress=not args.quiet)
        hyps = {uid: Transcript(text) for uid, text in texts.items()}
    else:
        model, device = _inference_model(args)
        options = _decode_options(args, model)
        items, problems = _input_items(args)
        t0 = time.perf_counter()
        hyps, load_problems = transcribe_items(
            model,
            items,
            options,
            max_seconds=args.max_duration,
            device=device,
            progress=not args.quiet,
            long_form=_long_form_options(args),
        )
    elapsed = time.perf_counter() - t0
    _write_results(args, fmt, hyps, items)
    if not args.onnx and options.skip_blank is not None:
        print(model.frame_skip_counts(options).summary(), file=sys.stderr)
    problems.merge(load_problems)
    if problems.counts:
        print(problems.summary("skipped or changed input"), file=sys.stderr)
    total = len(items) if args.data else len(args.files)
    print(f"decoded {len(hyps)} of {total} utterances in {elapsed:.1f}s", file=sys.stderr)
    return 0


def _long_form_options(args: argparse.Namespace):
    """LongFormOptions of --long-form-seconds/--window-seconds/--overlap-seconds/--pause-ms/--lead-ms/
    --long-form-windows, validated once; a clear error otherwise."""
    from .longform import LongFormOptions

    try:
        return LongFormOptions(
            min_seconds=args.long_form_seconds,
            window_seconds=args.window_seconds,
            overlap_seconds=args.overlap_seconds,
            pause_ms=args.pause_ms,
            windowed=args.long_form_windows,
            **({} if args.lead_ms is None else {"lead_ms": args.lead_ms}),
        )
    except ValueError as e:
        raise SystemExit(f"asr {args.command}: {e}") from e


def _output_format(args: argparse.Namespace) -> str:
    """--format, where --timestamps alone means json; a clear error for formats that cannot be written."""
    from .transcripts import TIMED

    fmt = args.format or ("json" if args.timestamps else "text")
    if fmt == "srt" and not args.out:
        raise SystemExit(f"asr {args.command}: --format srt writes one .srt file per utterance: give --out FOLDER")
    if fmt in TIMED and getattr(args, "method", None) in ("attention", "joint"):
        raise SystemExit(
            f"asr {args.command}: --format {fmt} needs word times, which --method {args.method} does not give "
            "(the attention decoder reads no frames); use greedy, beam or attention_rescoring"
        )
    return fmt


def _write_results(args: argparse.Namespace, fmt: str, results: dict, items: list[tuple[str, str]]) -> None:
    """The results in --format to --out (sorted by id) or stdout (in input order)."""
    from .transcripts import write_transcripts

    order = sorted(results) if args.out else [uid for uid, _ in items]
    try:
        said = write_transcripts(results, order, fmt, args.out)
    except ValueError as e:
        raise SystemExit(f"asr {args.command}: {e}") from e
    if said:
        print(said, file=sys.stderr)


def cmd_stream(args: argparse.Namespace) -> int:
    from .stream import StreamTiming, stream_items

    fmt = _output_format(args)
    model, device = _inference_model(args)
    options = _decode_options(args, model)
    try:
        timing = StreamTiming.from_ms(model, args.chunk_ms, args.left_context_ms)
    except ValueError as e:
        raise SystemExit(f"asr stream: --chunk-ms/--left-context-ms: {e}") from e
    items, problems = _input_items(args)
    shown: dict[str, str] = {}

    def show(batch, seconds, texts):
        if args.data or args.quiet:
            return
        for (uid, _), text in zip(batch, texts):
            if text != shown.get(uid, ""):
                shown[uid] = text
                print(f"{uid} [{seconds:.2f} s] {text}", file=sys.stderr)

    def progress(done):
        if args.data and not args.quiet:
            print(f"streamed {done} of {len(items)} utterances", file=sys.stderr)

    try:
        report, rec = stream_items(
            model, items, timing, options, batch_size=args.batch_size, device=device, on_partial=show, on_batch=progress
        )
    except ValueError as e:
        raise SystemExit(f"asr stream: {args.ckpt}: {e}") from e
    _write_results(args, fmt, report.hyps, items)  # a stream that failed midway is counted, not written
    problems.merge(report.problems)
    if problems.counts:
        print(problems.summary("skipped input"), file=sys.stderr)
    print(report.summary(rec, timing, args.batch_size), file=sys.stderr)
    if options.skip_blank is not None:
        print(model.frame_skip_counts(options).summary(), file=sys.stderr)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from .align import align_items, plot_alignment, write_ctm
    from .transcribe import split_utterances

    model, device = _inference_model(args)
    utts, problems = split_utterances(args.data, progress=not args.quiet)
    items, texts = [(u.id, str(u.path)) for u in utts], {u.id: u.text for u in utts}
    t0 = time.perf_counter()
    try:
        alis, align_problems = align_items(
            model,
            items,
            texts,
            head=args.head,
            max_seconds=args.max_duration,
            device=device,
            progress=not args.quiet,
            keep_log_probs=args.plot,
            where={u.id: u.where for u in utts},
        )
    except ValueError as e:
        raise SystemExit(f"asr align: {args.ckpt}: {e}") from e
    out = Path(args.out)
    write_ctm(out / "words.ctm", alis, "words")
    write_ctm(out / "tokens.ctm", alis, "tokens")
    shift = model.frame_seconds
    plotted = [uid for uid in sorted(alis) if alis[uid].log_probs is not None]
    for uid in plotted:
        plot_alignment(alis[uid], shift, out / f"{uid}.png", title=f"{uid}: {texts[uid]}")
    for p in (problems, align_problems):
        if p.counts:
            print(p.summary("skipped input"), file=sys.stderr)
    print(
        f"aligned {len(alis)} of {len(items)} utterances in {time.perf_counter() - t0:.1f}s: "
        f"{out / 'words.ctm'}, {out / 'tokens.ctm'}" + (f", {len(plotted)} plots" if plotted else ""),
        file=sys.stderr,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import ExportError, ExportOptions, export_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.device = "cpu"  # tracing runs on the CPU, whatever the machine has
    model, _ = _inference_model(args)
    try:
        opts = ExportOptions(
            head=args.head, streaming=args.streaming, chunk_ms=args.chunk_ms, left_context_ms=args.left_context_ms
        )
        res = export_model(model.cpu(), args.out, opts)
    except ExportError as e:
        raise SystemExit(f"asr export: {args.ckpt}: {e}") from e
    print(f"exported head {res.head!r} ({res.format}) to {res.out_dir}: " + ", ".join(p.name for p in res.files))
    if res.max_abs_diff is not None:
        what = "chunk step vs forward_chunk over 5 chunks" if args.streaming else "encoder graph vs PyTorch"
        print(f"{what} on random features: max |difference| {res.max_abs_diff:.2e}")
    print(f"sherpa-onnx commands: {res.out_dir / 'README.md'}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .metrics import TextFileError, plot_error_by_length, read_kaldi_text, score

    try:
        refs, hyps = read_kaldi_text(args.ref), read_kaldi_text(args.hyp)
    except (FileNotFoundError, TextFileError) as e:
        raise SystemExit(f"asr score: {e}") from e
    rep = score(refs, hyps, cer=args.cer)
    if args.report:
        Path(args.report).write_text(rep.details() + "\n")
    if args.plot:
        plot_error_by_length(rep, args.plot)
    print(rep.summary())
    if args.report:
        print(f"per-utterance report: {args.report}")
    if not args.report and args.verbose:
        print(rep.details())
    return 0


def cmd_lm(args: argparse.Namespace) -> int:
    from .data.tokenizer import load_tokenizer
    from .lm import ArpaError, NgramLM, perplexity, train_lm

    try:
        tokenizer = load_tokenizer(args.tokenizer)
        if args.lm_command == "train":
            t0 = time.time()
            est, report = train_lm(args.text, tokenizer, args.out, args.order, args.skip_ids)
            sizes = ", ".join(f"{n + 1}-grams {len(t)}" for n, t in enumerate(est.arpa.ngrams))
            print(f"{args.out}: order {args.order} over {len(tokenizer)} tokens; {sizes}")
            print(
                f"{est.sentences} sentences, {est.tokens} tokens (</s> included); text: {report.summary()}; "
                f"{time.time() - t0:.1f} s"
            )
            return 0
        lm = NgramLM.load(args.lm, tokenizer)
        ppl, n = perplexity(lm, args.text, tokenizer, args.skip_ids)
        print(f"perplexity {ppl:.3f} per token over {n} tokens (</s> included)")
        return 0
    except (FileNotFoundError, ValueError, ArpaError) as e:
        raise SystemExit(f"asr lm {args.lm_command}: {e}") from e


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["text", "json", "ctm", "srt"],
        help="text: 'utt-id TEXT' lines (default); json: one object a line with words, their start and "
        "end seconds and confidences; ctm: 'utt-id 1 start duration word confidence'; srt: one subtitle "
        "file per utterance in the --out folder",
    )
    parser.add_argument("--timestamps", action="store_true", help="word times and confidences (--format json)")


def _add_weight_flags(p: argparse.ArgumentParser) -> None:
    """The rescoring weights, the LM / hotword fusion flags and --skip-blank of DecodeOptions (default: the
    checkpoint's)."""
    for flag, what in (
        ("--ctc-weight", "attention_rescoring after CTC: w in (1 - w) * attention + w * CTC score"),
        ("--transducer-weight", "attention_rescoring after a transducer: the same w"),
        ("--reverse-weight", "attention scores: weight of the right-to-left decoder, if trained"),
    ):
        p.add_argument(flag, type=float, help=f"{what} (default: the checkpoint's decode options)")
    p.add_argument("--lm", help="ARPA n-gram LM over the model's tokens (asr lm train) fused into beam searches")
    p.add_argument("--lm-weight", type=float, help="shallow fusion: score += W * ln p_LM per token (default 0.3)")
    p.add_argument(
        "--ilm-weight",
        type=float,
        help="transducer beam search with --lm: score -= W * ln p_ILM, the predictor's internal LM (default 0)",
    )
    p.add_argument(
        "--hotwords",
        help="phrase file (one a line, optional ' :BOOST'): biases CTC and transducer searches toward them; "
        "greedy then runs as a beam of 1; --format json names the phrases that fired",
    )
    p.add_argument("--hotword-boost", type=float, help="bonus per phrase token where a line gives none (default 1.5)")
    p.add_argument(
        "--skip-blank",
        type=float,
        metavar="P",
        help="frame skipping for a transducer head beside a CTC head: the transducer's search skips the "
        "encoder frames where the CTC head's blank posterior is >= P, in (0, 1] (e.g. 0.95; a CTC head "
        "trained with repeat_penalty > 0 blanks more frames); word times stay those of all frames; "
        "logs the frames kept. Default: the checkpoint's decode.skip_blank, unset: no skipping",
    )


def build_parser() -> argparse.ArgumentParser:
    from .decoding.options import METHODS  # the one list of decoding methods

    p = argparse.ArgumentParser(
        prog="asr",
        description="End-to-end speech recognition: prepare data, train, "
        "transcribe, score. Run `asr COMMAND --help` for each command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    pp = sub.add_parser(
        "prepare",
        help="validate a corpus, write manifests and train a tokenizer",
        description="Read a LibriSpeech-layout corpus (or synthesize one), check every file, write "
        "lhotse manifests <split>.cuts.jsonl.gz, reference texts <split>.ref.txt, a "
        "sentencepiece tokenizer and prepare_report.txt.",
        epilog=EXAMPLES["prepare"],
        formatter_class=fmt,
    )
    pp.add_argument("corpus", choices=["librispeech", "synthetic"], help="corpus kind")
    pp.add_argument("--root", help="librispeech: folder holding the split folders")
    pp.add_argument("--out", required=True, help="output folder for manifests and tokenizer")
    pp.add_argument("--splits", nargs="+", help="split folder names (default: all found)")
    pp.add_argument(
        "--tokenizer",
        choices=["bpe", "unigram", "char"],
        help="tokenizer kind (default: bpe for librispeech and --text open, char for the grammar corpus)",
    )
    pp.add_argument("--vocab-size", type=int, default=500, help="bpe/unigram vocabulary size (default 500)")
    pp.add_argument("--tokenizer-model", help="use this existing sentencepiece model instead of training one")
    pp.add_argument("--corpus-dir", default="data/synthetic/LibriSpeech", help="synthetic: where to write audio")
    pp.add_argument(
        "--text",
        choices=list(SYNTH_SIZES),
        default="grammar",
        help="synthetic: grammar (~150 words, clean espeak-ng voices) or open (open-vocabulary English from "
        "Debian's fortunes and WordNet; espeak-ng and flite voices through noisy, reverberant, band-limited "
        "channels)",
    )
    pp.add_argument(
        "--size",
        choices=sorted({s for sizes in SYNTH_SIZES.values() for s in sizes}),
        help="synthetic: corpus size, utterances per split (default demo for grammar, small for open): "
        + "; ".join(f"{t} {k}: {v}" for t, sizes in SYNTH_SIZES.items() for k, v in sizes.items()),
    )
    pp.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    pp.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="parallel processes for synthesis and for the audio check (default: all cores)",
    )
    pp.add_argument(
        "--check-audio",
        choices=["full", "header"],
        default="full",
        help="full: decode every file, finding truncated files and NaN/Inf samples (default); header: "
        "open each file only, decoding no samples (training then skips such files when they fail)",
    )
    pp.add_argument(
        "--encoder-frame-ms",
        type=float,
        default=40.0,
        help="encoder frame duration (10 ms fbank shift x subsampling) for counting transcripts with "
        "more CTC tokens than their audio has frames (T shorter than U); 0: no such check (default 40)",
    )

    pt = sub.add_parser(
        "train",
        help="train a model (Hydra overrides)",
        description="Train with Lightning from "
        "conf/train.yaml plus Hydra overrides. Checkpoints every epoch; resume=true continues.",
        epilog=EXAMPLES["train"].format(groups="  (run from the repository to list them)"),
        formatter_class=fmt,
        add_help=False,
    )
    pt.add_argument("-h", "--help", action="store_true", help="show this help and the config groups")
    pt.add_argument(
        "--config-dir",
        help="config folder (default: the installed package's asr/conf, in a checkout "
        "or editable install the repository's conf/)",
    )

    pr = sub.add_parser(
        "transcribe",
        help="decode audio files or a LibriSpeech-style split",
        description="Decode with a trained checkpoint. Prints 'utt-id TEXT' lines, or writes them to --out.",
        epilog=EXAMPLES["transcribe"],
        formatter_class=fmt,
    )
    pr.add_argument("files", nargs="*", help="audio files (any sample rate; resampled to 16 kHz)")
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint from asr train (e.g. exp/x/best.ckpt)")
    src.add_argument("--onnx", help="an `asr export` folder, decoded with onnxruntime")
    pr.add_argument("--data", help="a LibriSpeech-style split folder to decode instead of FILEs")
    pr.add_argument("--out", help="write hypotheses here instead of stdout")
    pr.add_argument(
        "--method",
        choices=list(METHODS),
        help="greedy; beam: prefix beam search (CTC head) / transducer beam search (RNN-T, TDT head) / "
        "attention beam search (attention head); attention: the attention head's beam search whatever "
        "--head is; attention_rescoring: the head's beam n-best rescored by the attention head; joint: "
        "one beam search on CTC prefix and attention scores (--ctc-weight). "
        "Default: the checkpoint's decode.method",
    )
    pr.add_argument("--beam", type=int, help="beam size for --method beam (default: decode.beam, 4)")
    pr.add_argument(
        "--head",
        help="which head decodes, by its config name, e.g. transducer or ctc for hybrid "
        "models (default: decode.head, else the first head)",
    )
    pr.add_argument(
        "--max-symbols",
        type=int,
        help="transducer searches: most labels emitted on one frame; 1 makes beam search "
        "icefall's modified beam search (default: the head's, 10; with --onnx 1)",
    )
    _add_weight_flags(pr)
    _add_output_flags(pr)
    pr.add_argument("--max-duration", type=float, default=120.0, help="seconds of audio per batch (default 120)")
    pr.add_argument(
        "--long-form-seconds",
        type=float,
        default=60.0,
        help="files longer than this are decoded long-form, one at a time with bounded memory: a "
        "streaming model through its chunked encoder (320 ms chunks, 2560 ms left context), others "
        "in overlapping windows (default 60)",
    )
    pr.add_argument("--window-seconds", type=float, default=20.0, help="long-form window (default 20)")
    pr.add_argument(
        "--overlap-seconds", type=float, default=4.0, help="long-form overlap of neighbouring windows (default 4)"
    )
    pr.add_argument(
        "--long-form-windows", action="store_true", help="long files: decode windows even when the model streams"
    )
    pr.add_argument(
        "--pause-ms",
        type=float,
        default=150.0,
        help="long files: a pause this long (30 dB below the speech level) ends a segment, and the "
        "speech after it decodes from a fresh start; 0 = fixed windows / one stream (default 150)",
    )
    pr.add_argument(
        "--lead-ms",
        type=float,
        help="long files: a segment starts this much of its pause before the speech resumes, so that "
        "a soft onset is not cut off (default: LongFormOptions.lead_ms)",
    )
    pr.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    pr.add_argument("--threads", type=int, help="torch CPU threads")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")

    pst = sub.add_parser(
        "stream",
        help="stream-decode audio chunk by chunk (partial and final hypotheses)",
        description="Decode audio as a live stream: block by block, chunk by chunk, with the "
        "encoder's caches. Prints partial hypotheses (stderr) as they grow and final 'utt-id TEXT' "
        "lines, then latency figures.",
        epilog=EXAMPLES["stream"],
        formatter_class=fmt,
    )
    pst.add_argument("files", nargs="*", help="audio files (16 kHz files are read incrementally; others resampled)")
    pst.add_argument("--ckpt", required=True, help="checkpoint of a streaming model")
    pst.add_argument("--data", help="a LibriSpeech-style split to stream-decode instead of FILEs")
    pst.add_argument("--out", help="write final hypotheses here (for asr score) instead of stdout")
    pst.add_argument(
        "--chunk-ms",
        type=float,
        default=320.0,
        help="chunk duration in ms, a multiple of the 40 ms encoder frame (default 320)",
    )
    pst.add_argument(
        "--left-context-ms",
        type=float,
        default=2560.0,
        help="attention left context in ms, -1 for unlimited (default 2560)",
    )
    pst.add_argument("--head", help="decoding head of a hybrid (default: the checkpoint's decode head)")
    pst.add_argument(
        "--method",
        choices=list(METHODS),
        help="greedy, or beam: prefix beam search (CTC head) / transducer beam search, continued "
        "across chunks; partial hypotheses are then the current best; attention_rescoring: the beam "
        "search streams and its n-best is rescored by the attention head when a stream ends. "
        "Default: the checkpoint's decode.method",
    )
    pst.add_argument("--beam", type=int, help="beam size for --method beam (default: decode.beam)")
    pst.add_argument(
        "--max-symbols",
        type=int,
        help="transducer: most labels per frame (default: decode.max_symbols, else the head's)",
    )
    _add_weight_flags(pst)
    _add_output_flags(pst)
    pst.add_argument("--batch-size", type=int, default=16, help="streams decoded together (default 16)")
    pst.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    pst.add_argument("--threads", type=int, help="torch CPU threads")
    pst.add_argument("--quiet", action="store_true", help="no partial hypotheses or progress")

    pa = sub.add_parser(
        "align",
        help="forced-align transcripts: word and token times (CTM)",
        description="Align each utterance of a LibriSpeech-style split to its transcript with a CTC "
        "head (Viterbi over the CTC graph) and write word and token start/end times as CTM.",
        epilog=EXAMPLES["align"],
        formatter_class=fmt,
    )
    pa.add_argument("--ckpt", required=True, help="checkpoint with a CTC head (conformer_ctc, or a hybrid)")
    pa.add_argument("--data", required=True, help="LibriSpeech-style split folder (audio + transcripts)")
    pa.add_argument("--out", required=True, help="output folder for words.ctm, tokens.ctm and plots")
    pa.add_argument("--head", help="which CTC head aligns, by its config name (default: the first CTC head)")
    pa.add_argument(
        "--plot", type=int, default=0, metavar="N", help="also plot the alignment of N utterances (OUT/<utt-id>.png)"
    )
    pa.add_argument("--max-duration", type=float, default=120.0, help="seconds of audio per batch (default 120)")
    pa.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    pa.add_argument("--threads", type=int, help="torch CPU threads")
    pa.add_argument("--quiet", action="store_true", help="no progress bar")

    pe = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX for sherpa-onnx (and asr transcribe --onnx)",
        description="Write a checkpoint's encoder and head as ONNX graphs in sherpa-onnx's formats, "
        "with tokens.txt and a README.md holding the sherpa-onnx command.",
        epilog=EXAMPLES["export"],
        formatter_class=fmt,
    )
    pe.add_argument("--ckpt", required=True, help="checkpoint from asr train")
    pe.add_argument("--out", required=True, help="output folder")
    pe.add_argument("--head", help="which head to export, by its config name (default: the decode head)")
    pe.add_argument(
        "--streaming",
        action="store_true",
        help="a causal Conformer transducer as one chunk step with caches: sherpa-onnx's streaming "
        "conformer type (its OnlineRecognizer)",
    )
    pe.add_argument(
        "--chunk-ms",
        type=float,
        default=320.0,
        help="--streaming: chunk duration in ms, a multiple of the 40 ms encoder frame (default 320)",
    )
    pe.add_argument(
        "--left-context-ms",
        type=float,
        default=2560.0,
        help="--streaming: attention left context in ms, fixed in the graph's cache (default 2560, as asr stream)",
    )
    pe.add_argument("--threads", type=int, help="torch CPU threads")

    ps = sub.add_parser(
        "score",
        help="WER/CER of hypotheses against references",
        description="Score Kaldi-style 'utt-id TEXT' files with jiwer.",
        epilog=EXAMPLES["score"],
        formatter_class=fmt,
    )
    ps.add_argument("ref", help="reference text file")
    ps.add_argument("hyp", help="hypothesis text file")
    ps.add_argument("--cer", action="store_true", help="character error rate instead of WER")
    ps.add_argument("--report", help="write the per-utterance alignment report here (worst first)")
    ps.add_argument("--plot", help="write a PNG of the error rate by utterance length")
    ps.add_argument("--details", dest="verbose", action="store_true", help="print the per-utterance report")
    plm = sub.add_parser(
        "lm",
        help="train a token n-gram LM for fusion, or measure its perplexity",
        description="N-gram language models over the acoustic model's tokens.",
        epilog=EXAMPLES["lm"],
        formatter_class=fmt,
    )
    lm_sub = plm.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")
    plt = lm_sub.add_parser(
        "train",
        help="estimate an interpolated modified Kneser-Ney LM over tokens and write ARPA",
        description="Encode each line of --text with --tokenizer and estimate an interpolated modified "
        "Kneser-Ney n-gram model over the tokens; write it as ARPA (words: the tokenizer's pieces).",
        epilog=EXAMPLES["lm"],
        formatter_class=fmt,
    )
    plt.add_argument("--order", type=int, default=3, help="n-gram order, counted in tokens (default 3)")
    plt.add_argument("--out", required=True, help="the ARPA file to write (e.g. exp/lm/lm.arpa)")
    plpp = lm_sub.add_parser(
        "perplexity",
        help="per-token perplexity of an ARPA LM on a text",
        description="Per-token perplexity (</s> counted) of --lm on the lines of --text.",
        epilog=EXAMPLES["lm"],
        formatter_class=fmt,
    )
    plpp.add_argument("--lm", required=True, help="ARPA file from asr lm train")
    for q in (plt, plpp):
        q.add_argument("--text", required=True, help="UTF-8 text, one sentence a line")
        q.add_argument(
            "--tokenizer",
            required=True,
            help="the acoustic model's tokenizer: asr prepare's tokenizer_*.model, or a checkpoint",
        )
        q.add_argument(
            "--skip-ids", action="store_true", help="each line starts with an utterance id (as in *.ref.txt): drop it"
        )
    p.set_defaults(train_parser=pt)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if args.command == "train":
        if args.help:
            print(args.train_parser.format_help().replace("  (run from the repository to list them)", _conf_groups()))
            return 0
        return cmd_train(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    commands = {
        "prepare": cmd_prepare,
        "transcribe": cmd_transcribe,
        "stream": cmd_stream,
        "align": cmd_align,
        "score": cmd_score,
        "export": cmd_export,
        "lm": cmd_lm,
    }
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
