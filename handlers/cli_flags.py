"""The hyperparameter flags of ``stl train``: one table, read by the parser and by the request.

A new hyperparameter is one row here (and its place in the recipe), not an edit in the
parser, another in the request builder and a third in the help text.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.config import BALANCED, DEFAULT_BASE, NO_LIMIT


def _views(raw: str) -> list[str]:
    return [v.strip() for v in raw.split(",") if v.strip()]


def data_limit(raw: str) -> int:
    """``--data-limit``: ``all``, ``balance`` or a count. 0 and -1 are refused: DATA_LIMIT=0 (2019)
    balances while a body's 0 means all, so a bare number would be read one way or the other."""
    word = raw.strip().lower()
    if word == "all":
        return NO_LIMIT
    if word in ("balance", "balanced"):
        return BALANCED
    if word.isascii() and word.isdigit() and int(word) > 0:
        return int(word)
    hint = " (ambiguous: DATA_LIMIT=0 balances, a request's 0 means all)" if word in ("0", "-1") else ""
    raise argparse.ArgumentTypeError(f"give all, balance or a positive count, not {raw!r}{hint}")


def describe_data_limit(value: int) -> str | int:
    """A recipe's data_limit as --data-limit takes it."""
    return {NO_LIMIT: "all", BALANCED: "balance"}.get(value, value)


@dataclass(frozen=True)
class Flag:
    """``--<flag>`` sets the request's ``key`` (the 2019 name where there is one)."""

    flag: str
    key: str
    help: str
    type: Callable[[str], Any] | None = None  # int, float, str; None: an on/off switch
    choices: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        extra: dict[str, Any] = {"help": self.help}
        if self.type is None:
            extra["action"] = argparse.BooleanOptionalAction
        elif self.type is not _views:
            extra["type"] = self.type
        if self.choices:
            extra["choices"] = list(self.choices)
        if self.metavar:
            extra["metavar"] = self.metavar
        parser.add_argument(f"--{self.flag}", **extra)

    def value(self, args: argparse.Namespace) -> Any:
        raw = getattr(args, self.dest)
        return _views(raw) if raw is not None and self.type is _views else raw


TRAIN_FLAGS = (
    Flag("seed", "random_seed", "random seed (RANDOM_SEED, default 1234)", int),
    Flag("epochs", "epochs", "head training epochs (EPOCHS)", int),
    Flag("batch-size", "batch_size", "head training batch size (BATCH_SIZE)", int),
    Flag(
        "image-size", "image_size", "input size in pixels (IMAGE_SIZE; default: the base's native size)", int
    ),
    Flag("learning-rate", "learning_rate", "Adam learning rate (LEARNING_RATE)", float),
    Flag("base", "base", f"base network (BASE_MODEL, default {DEFAULT_BASE})", str),
    Flag(
        "train-percentage",
        "train_percentage",
        "share of each label used for training (TRAIN_PERCENTAGE)",
        int,
    ),
    Flag(
        "data-limit",
        "data_limit",
        "all (default), balance (every label cut to the smallest label's count) or N: at most N "
        "images per label (DATA_LIMIT: 0 = balance, as in 2019)",
        data_limit,
        metavar="all|balance|N",
    ),
    Flag("l2", "l2", "head L2 penalty; negative = choose by cross-validation (HEAD_L2)", float),
    Flag("flip", "flip", "with or without the mirrored view (FLIP_AUGMENT=1 adds it)"),
    Flag(
        "views",
        "views",
        "comma-separated views to average: original, mirrored, center, top-left, top-right, "
        "bottom-left, bottom-right (VIEWS; default mirrored,center)",
        _views,
    ),
    Flag(
        "extra-base",
        "extra_base",
        "a second base whose features are concatenated with the first's (EXTRA_BASE_MODEL)",
        str,
        metavar="NAME",
    ),
    Flag(
        "head",
        "head",
        "logistic: softmax regression to convergence, l2 by 5-fold CV; adam: mini-batch (HEAD)",
        str,
        choices=("logistic", "adam"),
    ),
    Flag(
        "calibrate",
        "calibrate",
        "fit a temperature on the cross-validation folds (CALIBRATE; logistic head, default on)",
    ),
)


def hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """The request's hyperparameters: only the flags given (the rest come from the settings)."""
    return {f.key: f.value(args) for f in TRAIN_FLAGS if getattr(args, f.dest) is not None}
