"""The zoo's book defaults, early stopping both ways, checkpoints that resume exactly, augmentation."""

import dataclasses

import numpy as np
import pytest
import torch

from digitpipe.models import build_net
from digitpipe.runtime import seed_everything
from digitpipe.train import Augmentation, augment, elastic, fit, slant, stop_reason
from digitpipe.records.specs import SPECS
from digitpipe.records.training import EpochResult

CPU = torch.device("cpu")


def test_specs_default_to_the_books_configuration():
    assert SPECS["logreg"].decay == 5e-3 and SPECS["logreg"].max_iter == 100
    assert (SPECS["dnn"].lr, SPECS["dnn"].momentum, SPECS["dnn"].batch_size, SPECS["dnn"].epochs) == (0.01, 0.9, 100, 30)
    lenet = SPECS["lenet"]
    assert (lenet.lr, lenet.momentum, lenet.weight_decay, lenet.batch_size, lenet.epochs) == (0.05, 0.9, 1e-5, 100, 30)
    assert SPECS["mlp"].weight_decay == 1e-4


@pytest.mark.parametrize("name, parameters", [("mlp", 784 * 50 + 50 + 50 * 10 + 10),
                                               ("dnn", 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10),
                                               ("lenet", 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 5010)])
def test_book_architectures(name, parameters):
    net = build_net(name)
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def _history(*val_pairs):
    return [EpochResult(i + 1, 0.0, 0.0, loss, acc, 0.0) for i, (loss, acc) in enumerate(val_pairs)]


def test_book_rule_stops_at_the_accuracy_threshold():
    spec = dataclasses.replace(SPECS["lenet"], stop_at_val_accuracy=0.985)
    assert stop_reason(spec, _history((0.1, 0.97))) == ""
    assert "0.9860 >= 0.985" in stop_reason(spec, _history((0.1, 0.97), (0.05, 0.986)))


def test_patience_stops_when_validation_loss_stalls():
    spec = dataclasses.replace(SPECS["lenet"], patience=2)
    assert stop_reason(spec, _history((0.5, 0), (0.4, 0), (0.45, 0))) == ""
    assert "not improved for 2 epochs" in stop_reason(spec, _history((0.5, 0), (0.4, 0), (0.45, 0), (0.41, 0)))


def test_fit_stops_early_and_says_why(split):
    seed_everything(0)
    spec = dataclasses.replace(SPECS["dnn"], epochs=10, stop_at_val_accuracy=0.5)
    history, reason = fit(build_net("dnn"), spec, split.train, split.val, CPU)
    assert len(history) < 10 and reason.startswith(f"early stop at epoch {len(history)}")


def test_resumed_training_ends_exactly_like_an_uninterrupted_one(split, tmp_path):
    spec = dataclasses.replace(SPECS["fastcnn"], epochs=3, batch_size=64)  # augmentation + OneCycle: the hard case

    seed_everything(5)
    whole = build_net("fastcnn")
    whole_history, _ = fit(whole, spec, split.train, split.val, CPU)

    def crash_after_two(result):
        if result.epoch == 2:
            raise KeyboardInterrupt  # the process dies after epoch 2's checkpoint was written

    seed_everything(5)
    with pytest.raises(KeyboardInterrupt):
        fit(build_net("fastcnn"), spec, split.train, split.val, CPU, [crash_after_two], tmp_path / "ckpt.pt")
    replayed = []
    seed_everything(5)
    resumed = build_net("fastcnn")
    history, _ = fit(resumed, spec, split.train, split.val, CPU, [replayed.append], tmp_path / "ckpt.pt")
    assert [h.epoch for h in replayed] == [1, 2, 3]  # the new run still sees the whole curve
    assert [h.val_loss for h in history] == [h.val_loss for h in whole_history]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_geometric_augmentation_moves_ink_but_keeps_shape_and_range(digits):
    x = torch.tensor(digits.images[:64], dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(0)
    y = augment(x, Augmentation(pen_share=0, noise_share=0, blur_share=0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255 + 1e-3  # bilinear: no new extremes
    assert not torch.equal(x, y)
    ratio = (y.sum((1, 2, 3)) / x.sum((1, 2, 3))).numpy()
    assert np.all((ratio > 0.6) & (ratio < 1.5))  # shifts, turns and rescaling: the digit stays in the frame


@pytest.mark.parametrize("family", ["pen_share", "noise_share", "blur_share", "slant_share", "elastic_share"])
def test_pen_noise_and_blur_change_their_share_of_a_batch(digits, family):
    x = torch.tensor(digits.images[:400], dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(0)
    only = Augmentation(degrees=0, shift_px=0, scale=0, pen_share=0, noise_share=0, blur_share=0)
    y = augment(x, dataclasses.replace(only, **{family: 0.5}))
    changed = ((y - x).abs() > 1).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.65 and y.min() >= 0 and y.max() <= 255


def test_a_whole_pixel_pen_change_is_a_full_cross_dilation_or_erosion(digits):
    from scipy import ndimage

    x = torch.tensor(digits.images[:200], dtype=torch.float32).unsqueeze(1)
    whole = Augmentation(degrees=0, shift_px=0, scale=0, pen_share=1, pen_full_share=1, noise_share=0, blur_share=0)
    y = augment(x, whole).squeeze(1).numpy()
    cross = ndimage.generate_binary_structure(2, 1)
    thicker = np.stack([ndimage.grey_dilation(d, footprint=cross, mode="constant") for d in digits.images[:200]])
    thinner = np.stack([ndimage.grey_erosion(d, footprint=cross, mode="constant") for d in digits.images[:200]])
    is_thicker = np.abs(y - thicker).max((1, 2)) < 1e-3
    is_thinner = np.abs(y - thinner).max((1, 2)) < 1e-3
    assert (is_thicker | is_thinner).all() and 0.3 < is_thicker.mean() < 0.7


@pytest.mark.parametrize("change", [lambda x: slant(x, 20.0), lambda x: elastic(x, 34.0, 4.0)],
                         ids=["slant", "elastic"])
def test_slant_and_elastic_keep_shape_and_range_are_seeded_and_stay_on_the_batchs_device(digits, change):
    x = torch.tensor(digits.images[:64], dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(3)
    y = change(x)
    torch.manual_seed(3)
    assert torch.equal(y, change(x))  # the seed decides it whole
    assert y.shape == x.shape and y.device == x.device and y.min() >= 0 and y.max() <= 255 + 1e-3
    assert ((y - x).abs() > 1).flatten(1).any(1).all()  # every digit moved
    ratio = (y.sum((1, 2, 3)) / x.sum((1, 2, 3))).numpy()
    assert np.all((ratio > 0.6) & (ratio < 1.5))  # ink moved, not lost


def test_an_elastic_field_of_no_strength_leaves_the_digit_as_it_is(digits):
    x = torch.tensor(digits.images[:16], dtype=torch.float32).unsqueeze(1)
    assert (elastic(x, 0.0, 4.0) - x).abs().max() < 0.01


def test_the_shipped_nets_train_without_the_new_hands_until_measured():
    assert all(spec.augmentation.slant_share == spec.augmentation.elastic_share == 0
               for spec in SPECS.values() if hasattr(spec, "augmentation"))
