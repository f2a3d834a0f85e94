"""Training the stance reader (:mod:`agent.stance_reader`): LoRA fine-tuning of MiniLM on labelled replies.

PyTorch is needed here only, at training time (``pip install torch`` -- on Linux the CPU build,
``--index-url https://download.pytorch.org/whl/cpu``, is a few hundred megabytes instead of gigabytes);
the app reads the result with NumPy and ONNX Runtime. The forward pass below is the same BERT as
:func:`agent.embed.build_graph` (embeddings, six post-norm layers, masked mean pooling, unit length), with
each adapted projection computing ``x W^T + b + (alpha / r) x A^T B^T``; only ``A``, ``B`` and the head
learn, so the base weights stay those the grader verifies. tests/test_stance_reader.py checks that the
merged ONNX graph gives the torch model's probabilities.

The loss is binary cross-entropy per don't-step, over the labels a row has (a step a file leaves
unlabelled is masked out, not counted as ``ok``).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent import checks, embed, stance_reader
from agent.calibrate import load_examples, persona_context
from agent.grader import grade_fast
from agent.rubrics import Rubric

RANK = 8
ALPHA = 16.0
EPOCHS = 10
LEARNING_RATE = 3e-3
BATCH = 32
WARMUP = 20  # optimiser steps with a rising learning rate
DROPOUT = 0.0  # BERT's own recipe drops 0.1 of attention weights and sub-layer outputs while training
TORCH_HINT = "pip install torch --index-url https://download.pytorch.org/whl/cpu (training only)"


@dataclass
class Row:
    """One labelled reply: per step 1.0 (violated), 0.0 (ok) or NaN (not labelled); ``group`` names its author
    or file, for cross-validation that leaves whole groups out."""

    text: str
    labels: list[float]
    group: str


def require_torch() -> Any:
    """PyTorch, or a RuntimeError that says how to install the CPU build (the app never needs it)."""
    try:
        import torch
    except ImportError as exc:
        raise RuntimeError(f"training the stance reader needs PyTorch: {TORCH_HINT}") from exc
    return torch


def _model(torch: Any, base: dict[str, np.ndarray], steps: int, rank: int, alpha: float,
           targets: Sequence[str], dropout: float) -> Any:  # fmt: skip
    nn, functional = torch.nn, torch.nn.functional
    weights = {name: torch.tensor(np.asarray(value, dtype=np.float32)) for name, value in base.items()}
    heads, width = embed.HEADS, embed.DIMENSIONS // embed.HEADS

    class Adapted(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.ParameterDict()
            self.b = nn.ParameterDict()
            for layer in range(embed.LAYERS):
                for target in targets:
                    suffix = stance_reader.TARGETS[target]
                    shape = weights[f"encoder.layer.{layer}.{suffix}.weight"].shape
                    key = f"{layer}_{target}"
                    self.a[key] = nn.Parameter(torch.randn(rank, shape[1]) * 0.01)
                    self.b[key] = nn.Parameter(torch.zeros(shape[0], rank))
            self.head = nn.Linear(embed.DIMENSIONS, steps)

        def linear(self, x: Any, layer: int, part: str) -> Any:
            prefix = f"encoder.layer.{layer}.{part}"
            out = functional.linear(x, weights[prefix + ".weight"], weights[prefix + ".bias"])
            for target in targets:
                if stance_reader.TARGETS[target] == part:
                    key = f"{layer}_{target}"
                    out = out + (x @ self.a[key].T @ self.b[key].T) * (alpha / rank)
            return out

        def drop(self, x: Any) -> Any:
            return functional.dropout(x, dropout, self.training) if dropout else x

        def norm(self, x: Any, prefix: str) -> Any:
            return functional.layer_norm(x, (embed.DIMENSIONS,), weights[prefix + ".weight"],
                                         weights[prefix + ".bias"], embed.EPS)  # fmt: skip

        def forward(self, ids: Any, mask: Any) -> Any:
            batch, length = ids.shape
            words = weights["embeddings.word_embeddings.weight"][ids]
            placed = weights["embeddings.position_embeddings.weight"][:length]
            x = words + placed + weights["embeddings.token_type_embeddings.weight"][0]
            x = self.norm(x, "embeddings.LayerNorm")
            blocked = (1 - mask.float())[:, None, None, :] * -10000.0
            for layer in range(embed.LAYERS):
                p = f"encoder.layer.{layer}"

                def split(t: Any) -> Any:
                    return t.view(batch, length, heads, width).transpose(1, 2)

                q = split(self.linear(x, layer, "attention.self.query"))
                k = split(self.linear(x, layer, "attention.self.key"))
                v = split(self.linear(x, layer, "attention.self.value"))
                attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width) + blocked, -1)
                attended = self.drop(attention) @ v
                attended = attended.transpose(1, 2).reshape(batch, length, embed.DIMENSIONS)
                x = self.norm(
                    self.drop(self.linear(attended, layer, "attention.output.dense")) + x,
                    p + ".attention.output.LayerNorm",
                )
                hidden = functional.gelu(self.linear(x, layer, "intermediate.dense"))
                x = self.norm(self.drop(self.linear(hidden, layer, "output.dense")) + x, p + ".output.LayerNorm")
            real = mask.float()[:, :, None]
            pooled = functional.normalize((x * real).sum(1) / real.sum(1), dim=-1)
            return self.head(pooled * stance_reader.SCALE)

    return Adapted()


def _batch(torch: Any, tokenizer: Any, texts: Sequence[str]) -> tuple[Any, Any]:
    encoded = [e.ids for e in tokenizer.encode_batch(list(texts))]
    width = max(len(e) for e in encoded)
    ids = torch.zeros(len(encoded), width, dtype=torch.long)
    mask = torch.zeros(len(encoded), width, dtype=torch.long)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


@dataclass
class Trained:
    """The arrays a reader file holds (LoRA factors and the head), and the torch model to score with."""

    arrays: dict[str, np.ndarray]
    model: Any
    tokenizer: Any

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        torch = require_torch()
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), 64):
                ids, mask = _batch(torch, self.tokenizer, texts[start : start + 64])
                out.append(torch.sigmoid(self.model(ids, mask)).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.arrays["head.bias"].shape[0]))


def train(
    rows: Sequence[Row],
    steps: int,
    *,
    rank: int = RANK,
    alpha: float = ALPHA,
    targets: Sequence[str] = stance_reader.DEFAULT_TARGETS,
    dropout: float = DROPOUT,
    epochs: int = EPOCHS,
    learning_rate: float = LEARNING_RATE,
    seed: int = 0,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> Trained:
    """Fit the adapter and head on ``rows`` (batches of similar length, AdamW, warm-up then linear decay)."""
    torch = require_torch()
    torch.manual_seed(seed)
    shuffle = random.Random(seed)
    torch.set_num_threads(threads or embed.all_cores())
    base, tokenizer = embed.load_weights()
    model = _model(torch, base, steps, rank, alpha, targets, dropout)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].text))
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    total, done = epochs * len(batches), 0
    model.train()
    for epoch in range(epochs):
        shuffle.shuffle(batches)
        loss_sum = 0.0
        for chosen in batches:
            ids, mask = _batch(torch, tokenizer, [rows[i].text for i in chosen])
            target = torch.tensor([rows[i].labels for i in chosen], dtype=torch.float32)
            known = ~torch.isnan(target)
            logits = model(ids, mask)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[known], target[known])
            for group in optimiser.param_groups:
                group["lr"] = learning_rate * min(1.0, (done + 1) / WARMUP) * (1 - done / total)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            done += 1
            loss_sum += float(loss.item())
        if progress:
            progress(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / len(batches):.4f}")
    arrays: dict[str, np.ndarray] = {}
    for layer in range(embed.LAYERS):
        for target in targets:
            key = f"{layer}_{target}"
            arrays[stance_reader.adapter_key(layer, target, "A")] = model.a[key].detach().numpy().astype(np.float32)
            arrays[stance_reader.adapter_key(layer, target, "B")] = model.b[key].detach().numpy().astype(np.float32)
    arrays["head.weight"] = model.head.weight.detach().numpy().astype(np.float32)
    arrays["head.bias"] = model.head.bias.detach().numpy().astype(np.float32)
    return Trained(arrays=arrays, model=model, tokenizer=tokenizer)


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- from labelled files to a reader -----------------------------------------------------------------

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.01)  # 1.01: the reader never fires there


@dataclass
class Labelled:
    """A training row with what the grader without the reader says of it (for choosing thresholds)."""

    row: Row
    violated: list[bool]  # per step: the grader without the reader already calls it violated
    kind: bool  # the grader found a kind move (a kind do-step demonstrated)
    unfamiliar: bool = False  # the classifier left the reply to the checks, and so does the reader


def rows_from(paths: Sequence[str], rubric: Rubric, steps: Sequence[str], kind_steps: Sequence[str]) -> list[Labelled]:
    """Every reply of the files with a label for one of ``steps``, read as the live grader reads it, with
    the grader's own verdicts (checks, classifier, stance acts; no reader). The group is the row's
    ``author`` where the file names one, else the file (with its folder)."""
    out: list[Labelled] = []
    for path in paths:
        for example in load_examples(path, rubric):
            labels = [{"violated": 1.0, "ok": 0.0}.get(str(example.labels.get(s)), math.nan) for s in steps]
            if all(math.isnan(v) for v in labels):
                continue
            context = persona_context(example, rubric)
            text = checks.read(example.reply, rubric.step_ids, checks.name_tokens(context.persona_name)).for_classifier
            grade = grade_fast(rubric, example.reply, context, use_reader=False)
            graded = grade.verdicts
            name = f"{Path(path).parent.name}/{Path(path).name}"  # human/train.jsonl is not train.jsonl
            group = f"{name}:{example.author}" if example.author else name
            out.append(Labelled(
                row=Row(text=text, labels=labels, group=group),
                violated=[graded[s].verdict == "violated" if s in graded else False for s in steps],
                kind=stance_reader.shows_kind_step(graded, list(kind_steps)),
                unfamiliar=grade.learned_abstained,
            ))  # fmt: skip
    return out


def folds_of(groups: Sequence[str], count: int) -> list[int]:
    """A fold number per row: whole groups (authors, files) dealt to ``count`` folds, largest first, each
    to the fold with the fewest rows so far (so a fold's rows were never trained on beside their author)."""
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    load = [0] * count
    fold_of: dict[str, int] = {}
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        chosen = load.index(min(load))
        fold_of[group] = chosen
        load[chosen] += sizes[group]
    return [fold_of[g] for g in groups]


def out_of_fold(labelled: Sequence[Labelled], steps: int, folds: int, *, seed: int = 0,
                progress: Callable[[str], None] | None = None, **options: Any) -> np.ndarray:  # fmt: skip
    """Each row's probabilities from a reader trained on the other folds."""
    fold = folds_of([item.row.group for item in labelled], folds)
    probabilities = np.zeros((len(labelled), steps))
    for k in range(folds):
        train_rows = [item.row for item, f in zip(labelled, fold, strict=True) if f != k]
        test = [i for i, f in enumerate(fold) if f == k]
        if progress:
            progress(f"fold {k + 1}/{folds}: training on {len(train_rows)} replies, scoring {len(test)}")
        trained = train(train_rows, steps, seed=seed, progress=progress, **options)
        probabilities[test] = trained.probabilities([labelled[i].row.text for i in test])
    return probabilities


def decide(labelled: Sequence[Labelled], probabilities: np.ndarray, step: int, threshold: float,
           kind_threshold: float) -> np.ndarray:  # fmt: skip
    """Whether the grader with the reader calls each row's step violated, at these thresholds."""
    grader = np.array([item.violated[step] for item in labelled])
    kind = np.array([item.kind for item in labelled])
    read = ~np.array([item.unfamiliar for item in labelled], dtype=bool)
    needed = np.where(kind, kind_threshold, threshold)
    return grader | (read & (probabilities[:, step] >= needed))


def accuracy(
    labelled: Sequence[Labelled], predicted: np.ndarray, step: int, rows: Sequence[int] | None = None
) -> tuple[float, int]:
    """Agreement with the labels on the rows labelled for ``step`` (all rows, or ``rows``), and their count."""
    chosen = range(len(labelled)) if rows is None else rows
    pairs = [
        (predicted[i], labelled[i].row.labels[step]) for i in chosen if not math.isnan(labelled[i].row.labels[step])
    ]
    if not pairs:
        return math.nan, 0
    return sum(bool(p) == (y == 1.0) for p, y in pairs) / len(pairs), len(pairs)


def group_mean_accuracy(labelled: Sequence[Labelled], predicted: np.ndarray, step: int) -> float:
    """The mean over groups (authors, files) of the accuracy on each: every author and file counts once, so
    neither the many hostility replies nor the many plain ones decide alone."""
    rows_of: dict[str, list[int]] = {}
    for i, item in enumerate(labelled):
        rows_of.setdefault(item.row.group, []).append(i)
    scores = [accuracy(labelled, predicted, step, rows)[0] for rows in rows_of.values()]
    return float(np.mean([s for s in scores if not math.isnan(s)]))


# After a kind move the reader's new findings must be this often right out of fold, or it stays silent there:
# telling a trainee who named the feeling that they dismissed it costs more trust than a miss.
PRECISION_AFTER_KIND = 0.9


def kind_precision(labelled: Sequence[Labelled], probabilities: np.ndarray, step: int, threshold: float) -> float:
    """Of the replies with a kind move that the reader alone would call violated at ``threshold``, the share
    labelled violated (NaN when it would call none)."""
    hits = [item.row.labels[step] for item, p in zip(labelled, probabilities[:, step], strict=True)
            if item.kind and not item.unfamiliar and not item.violated[step] and p >= threshold
            and not math.isnan(item.row.labels[step])]  # fmt: skip
    return sum(hits) / len(hits) if hits else math.nan


def choose_thresholds(labelled: Sequence[Labelled], probabilities: np.ndarray, step: int) -> tuple[float, float]:
    """(threshold, kind_threshold): after a kind move, the lowest threshold whose new findings are right at
    least :data:`PRECISION_AFTER_KIND` of the time out of fold (none: never); otherwise the threshold with the
    best out-of-fold :func:`group_mean_accuracy`, the highest among ties (the reader fires least)."""
    precise = (t for t in THRESHOLDS if kind_precision(labelled, probabilities, step, t) >= PRECISION_AFTER_KIND)
    kind_threshold = next(precise, THRESHOLDS[-1])
    best: tuple[float, float] | None = None
    for threshold in THRESHOLDS:
        predicted = decide(labelled, probabilities, step, threshold, max(threshold, kind_threshold))
        key = (group_mean_accuracy(labelled, predicted, step), threshold)
        if best is None or key > best:
            best = key
    assert best is not None
    return best[1], max(best[1], kind_threshold)


# -- the hostility gate (stance_reader.Gate) ---------------------------------------------------------

GATE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 1.01)
GATE_FLOORS = (0.5, 0.8, 1.01)


def decide_gate(labelled: Sequence[Labelled], probabilities: np.ndarray, columns: Sequence[int],
                gate: stance_reader.Gate) -> np.ndarray:  # fmt: skip
    """Per row and step (all columns): violated by the grader, or by the gate over ``columns`` (the decided
    steps) on a row the grader found no hostility in, as :func:`agent.stance_reader.apply` decides live."""
    predicted = np.array([item.violated for item in labelled], dtype=bool)
    for i, item in enumerate(labelled):
        if item.unfamiliar or any(item.violated):
            continue
        for k, _ in gate.findings([float(probabilities[i, c]) for c in columns], item.kind):
            predicted[i, columns[k]] = True
    return predicted


def gate_kind_precision(labelled: Sequence[Labelled], probabilities: np.ndarray, columns: Sequence[int],
                        threshold: float) -> float:  # fmt: skip
    """Of the replies with a kind move and no hostility found that the gate would call hostile at
    ``threshold``, the share labelled hostile on any step (NaN when it would call none)."""
    hits = [max((v for v in item.row.labels if not math.isnan(v)), default=math.nan)
            for item, p in zip(labelled, probabilities[:, list(columns)].max(axis=1), strict=True)
            if item.kind and not item.unfamiliar and not any(item.violated) and p >= threshold]  # fmt: skip
    hits = [h for h in hits if not math.isnan(h)]
    return sum(hits) / len(hits) if hits else math.nan


def choose_gate(labelled: Sequence[Labelled], probabilities: np.ndarray, columns: Sequence[int]) -> stance_reader.Gate:
    """After a kind move, the lowest threshold whose new findings are hostile at least
    :data:`PRECISION_AFTER_KIND` of the time out of fold (none: never); then the threshold and floor with the
    best mean over the decided steps of :func:`group_mean_accuracy`, the highest among ties."""
    precise = (t for t in GATE_THRESHOLDS
               if gate_kind_precision(labelled, probabilities, columns, t) >= PRECISION_AFTER_KIND)  # fmt: skip
    kind_threshold = next(precise, GATE_THRESHOLDS[-1])
    best: tuple[float, float, float] | None = None
    for threshold in GATE_THRESHOLDS:
        for floor in GATE_FLOORS:
            gate = stance_reader.Gate(threshold=threshold, kind_threshold=max(threshold, kind_threshold), floor=floor)
            predicted = decide_gate(labelled, probabilities, columns, gate)
            score = float(np.mean([group_mean_accuracy(labelled, predicted[:, c], c) for c in columns]))
            if best is None or (score, threshold, floor) > best:
                best = (score, threshold, floor)
    assert best is not None
    return stance_reader.Gate(threshold=best[1], kind_threshold=max(best[1], kind_threshold), floor=best[2])
