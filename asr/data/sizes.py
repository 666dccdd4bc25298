"""Synthetic corpus sizes (utterances per split), by text kind; torch-free so that `asr --help` stays fast."""

SIZES: dict[str, dict[str, dict[str, int]]] = {
    "grammar": {
        "tiny": {"train-clean": 480, "dev-clean": 48, "test-clean": 64},
        "demo": {"train-clean": 2400, "dev-clean": 160, "test-clean": 240},
    },
    # 3.2 s an utterance on average: tiny 1.8 h of training audio, small 10 h, large 100 h (each
    # training sentence then spoken about twice, by different speakers)
    "open": {
        "tiny": {"train-clean": 2000, "dev-clean": 100, "test-clean": 200},
        "small": {"train-clean": 11500, "dev-clean": 500, "test-clean": 1000},
        "large": {"train-clean": 115000, "dev-clean": 1000, "test-clean": 2000},
    },
}
