"""Behavioural tests: held-out digits shifted, rotated, rescaled, thickened or thinned, noisy and blurred, at two
strengths; and some of them drawn on the page and photographed as people would (digitpipe.people); and how a
model's predictions hold up on them (numpy, scipy, Pillow; no torch).

The suite is a fixed, versioned benchmark: the same held-out digits, seed and SPEC give the same images on every
machine, so every model of a run and the champion it is compared with see exactly the same perturbed copies.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe import people
from digitpipe.evaluate import sign_test
from digitpipe.files import write_json
from digitpipe.records.evidence import RobustComparison, Robustness

if TYPE_CHECKING:
    from digitpipe.data import Dataset

SPEC = "digitpipe-perturb-v1"  # change when FAMILIES or STRENGTHS change: robust accuracies then stop comparing
#                                (people's digits have their own, people.SPEC)
FAMILIES = ("shift", "rotate", "scale", "thickness", "noise", "blur")
STRENGTHS = {  # the largest change at each strength; geometric ones are drawn uniformly in +-limit per digit
    1: {"shift": 1.5, "rotate": 6.0, "scale": 0.075, "thickness": 0.5, "noise": 8.0, "blur": 0.5},
    2: {"shift": 3.0, "rotate": 12.0, "scale": 0.15, "thickness": 1.0, "noise": 16.0, "blur": 1.0},
}  # pixels, degrees, scale fraction, dilation or erosion (0.5: half-way), noise sigma on 0-255, blur sigma
COPIES = tuple((family, strength) for strength in STRENGTHS for family in FAMILIES)
PEOPLE = ("drawn", "photographed")  # people's families the gate weighs, each against the champion on its own
PEOPLE_DIGITS = 60  # at least this many of the suite's digits (a tenth where that is more) are also drawn and
#                     photographed: ~10 ms each, so that the clause costs a fixture run ~15% (bench/README.md)
GATE_PHOTO_SIDES = (160, 400)  # the gate's photos' long sides, for its cost; bench/people.py takes phone sizes too


@dataclass(frozen=True)
class Suite:
    """Perturbed copies of `digits`: images[i] is the i-th (family, strength) of COPIES, digit order kept; people[j]
    the j-th family of PEOPLE made of the first digits (as many as people has columns)."""

    digits: Dataset
    images: np.ndarray  # len(COPIES) x N x 28 x 28 uint8
    seed: int
    people: np.ndarray  # len(PEOPLE) x M x 28 x 28 uint8, M <= N
    spec: str = SPEC

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of every perturbed image and person's digit: equal digests, equal benchmarks."""
        both = np.concatenate([self.images.reshape(-1), self.people.reshape(-1)])
        return hashlib.sha256(np.ascontiguousarray(both).tobytes()).hexdigest()

    def subset(self, keep: np.ndarray) -> Suite:
        """The suite for the digits where `keep` (a boolean mask) is true (e.g. those a champion never trained on)."""
        assert keep.dtype == bool, "a mask: the people's copies are the first digits' and must stay beside them"
        return Suite(self.digits.subset(keep), self.images[:, keep], self.seed,
                     self.people[:, keep[: self.people.shape[1]]], self.spec)

    def tags(self) -> dict[str, object]:
        """What identifies the benchmark, for run and version tags."""
        return {"robustness_spec": self.spec, "robustness_seed": self.seed, "robustness_digest": self.digest[:16],
                "robustness_digits": len(self.digits), "robustness_people_spec": people.SPEC,
                "robustness_people_digits": self.people.shape[1]}


def build_suite(held_out: Dataset, seed: int = 0, max_digits: int = 2000, people_digits: int | None = None) -> Suite:
    """Every (family, strength) copy of at most `max_digits` held-out digits (a seeded random sample of them, in a
    seeded order), and the first `people_digits` of them (default: PEOPLE_DIGITS or a tenth) drawn and
    photographed."""
    order = np.random.default_rng(seed).permutation(len(held_out))[:max_digits]
    digits = held_out.subset(order)  # shuffled: the first few, made into people's digits, are a random sample too
    images = np.stack([perturb(digits.images, family, STRENGTHS[strength][family],
                               np.random.default_rng([seed, i])) for i, (family, strength) in enumerate(COPIES)])
    if people_digits is None:
        people_digits = max(PEOPLE_DIGITS, len(digits) // 10)
    few = digits.subset(np.arange(min(people_digits, len(digits))))
    made = np.stack([people.family(family, few.images, few.labels, seed, GATE_PHOTO_SIDES) for family in PEOPLE])
    return Suite(digits, images, seed, made)


def perturb(images: np.ndarray, family: str, limit: float, rng: np.random.Generator) -> np.ndarray:
    """`images` (N x 28 x 28 uint8) changed by `family` up to `limit`, each digit by its own random draw."""
    from scipy import ndimage  # ~0.3 s to import: only when the suite is built

    x = images.astype(np.float32)
    n = len(images)
    if family in ("shift", "rotate", "scale"):
        shifts = rng.uniform(-limit, limit, (n, 2)) if family == "shift" else np.zeros((n, 2))
        angles = np.radians(rng.uniform(-limit, limit, n)) if family == "rotate" else np.zeros(n)
        zooms = 1 + rng.uniform(-limit, limit, n) if family == "scale" else np.ones(n)
        out = np.stack([_affine(ndimage, img, a, z, s) for img, a, z, s in zip(x, angles, zooms, shifts)])
    elif family == "thickness":
        cross = ndimage.generate_binary_structure(2, 1)[None]  # one pixel up, down, left and right
        thicker = ndimage.grey_dilation(x, footprint=cross)
        thinner = ndimage.grey_erosion(x, footprint=cross)
        changed = np.where(rng.random(n)[:, None, None] < 0.5, thicker, thinner)
        out = x + limit * (changed - x)
    elif family == "noise":
        out = x + rng.normal(0, limit, x.shape)
    elif family == "blur":
        out = ndimage.gaussian_filter(x, sigma=(0, limit, limit))
    else:
        raise ValueError(f"unknown perturbation {family!r}; expected one of {FAMILIES}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _affine(ndimage, image: np.ndarray, angle: float, zoom: float, shift: np.ndarray) -> np.ndarray:
    """Rotate by `angle` and scale by `zoom` about the centre, then move by `shift` pixels (bilinear, black fill)."""
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    inverse = np.array([[cos, sin], [-sin, cos]])  # output pixel -> input pixel
    centre = np.array([13.5, 13.5])
    offset = centre - inverse @ (centre + shift)
    return ndimage.affine_transform(image, inverse, offset=offset, order=1, cval=0.0)


def measure(predict: Callable[[np.ndarray], np.ndarray], suite: Suite) -> tuple[Robustness, np.ndarray]:
    """Score the clean digits and every copy in one batch; returns the result and the predictions: the clean
    digits' first, then each copy's ((1 + len(COPIES)) x N), for the flip picture."""
    n, m, labels = len(suite.digits), suite.people.shape[1], suite.digits.labels
    everything = predict(np.concatenate([suite.digits.images, *suite.images, *suite.people]))
    predicted = everything[: (len(COPIES) + 1) * n].reshape(len(COPIES) + 1, n)
    by_people = everything[(len(COPIES) + 1) * n :].reshape(len(PEOPLE), m) == labels[:m]
    clean, copies = predicted[0], predicted[1:]
    correct = copies == labels
    strong = np.array([strength == 2 for _, strength in COPIES])
    result = Robustness(
        clean_accuracy=float(np.mean(clean == labels)),
        accuracies={f"{family}_{strength}": float(correct[i].mean()) for i, (family, strength) in enumerate(COPIES)},
        robust_accuracy=float(correct[strong].mean()),
        invariance_rate=float(np.mean((copies == clean).all(axis=0))),
        strong_correct=correct[strong].T.copy(),
        people={family: float(by_people[j].mean()) for j, family in enumerate(PEOPLE) if m},
        people_correct=by_people.T.copy())
    return result, predicted


def compare_robustness(challenger: np.ndarray, champion: np.ndarray, seed: int = 0,
                       resamples: int = 2000) -> RobustComparison:
    """Paired bootstrap over digits of two models' strength-2 correctness (digits x families, bool): the copies
    of one digit move together, since they are not independent evidence. The upper bound is how much better the
    challenger could be: when even that is below -margin, it is less robust beyond doubt."""
    per_digit = challenger.mean(axis=1) - champion.mean(axis=1)
    n = len(per_digit)
    if n == 0:
        return RobustComparison(0, float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.array([per_digit[rng.integers(0, n, n)].mean() for _ in range(resamples)])
    return RobustComparison(n, float(challenger.mean()), float(champion.mean()), float(np.quantile(means, 0.95)))


def compare_people(challenger: Robustness, champion: Robustness, fresh: np.ndarray) -> dict[str, RobustComparison]:
    """Two models on each family of people's digits, where `fresh` (a boolean mask over the suite's digits) marks
    those new to the champion, whose results are on those alone (measured on suite.subset(fresh))."""
    mine = challenger.people_correct[fresh[: len(challenger.people_correct)]]
    if mine.shape != champion.people_correct.shape:
        raise ValueError(f"people's digits of two suites: {mine.shape} against {champion.people_correct.shape}")
    return {family: compare_family(mine[:, j], champion.people_correct[:, j]) for j, family in enumerate(PEOPLE)}


def compare_family(challenger: np.ndarray, champion: np.ndarray) -> RobustComparison:
    """Two models' correctness (bool, per digit) on one family: the bootstrap's bound, and McNemar's exact test on
    the digits only one of them reads (a family has 60-200 digits: a few misreads more are chance)."""
    bootstrapped = compare_robustness(challenger[:, None], champion[:, None])
    wins, losses = int(np.sum(challenger & ~champion)), int(np.sum(champion & ~challenger))
    return dataclasses.replace(bootstrapped, p_value=sign_test(wins, wins + losses))


def check_robustness(onnx_path: Path, suite: Suite, folder: Path) -> Robustness:
    """The exported model on the perturbation suite: metrics, robustness.json and the flipped digits' picture."""
    from digitpipe import plots
    from digitpipe.onnx_scorer import OnnxScorer

    result, predicted = measure(OnnxScorer(onnx_path).predict, suite)
    write_json(folder / "robustness.json", {**suite.tags(), **result.metrics(), "clean_accuracy": result.clean_accuracy})
    plots.flips_png(suite.digits.images, suite.digits.labels, predicted[0], suite.images, predicted[1:],
                    [f"{family} {strength}" for family, strength in COPIES], folder / "flips.png",
                    f"{folder.name}: robust accuracy {result.robust_accuracy:.2%}")
    return result
