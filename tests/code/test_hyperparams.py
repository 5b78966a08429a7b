"""Hyperparameters from outside the code: --set and params files checked against the zoo's specs, and which wins."""

from __future__ import annotations

import pytest

from digitpipe.errors import UserError
from digitpipe.hyperparams import combine, parse_sets, read_params, write_params
from digitpipe.records.specs import SPACES, SPECS, Choice, flat_values, spec_for


def test_set_reads_yaml_values_as_the_fields_types():
    assert parse_sets(["fastcnn.lr=3e-3", "fastcnn.epochs=8", "fastcnn.augmentation.degrees=5",
                       "lenet.patience=none", "mlp.augment=true"]) == {
        "fastcnn": {"lr": 0.003, "epochs": 8, "augmentation.degrees": 5.0},
        "lenet": {"patience": None}, "mlp": {"augment": True}}


@pytest.mark.parametrize(("item", "line"), [
    ("fastcnn.lr", "--set 'fastcnn.lr': expected MODEL.FIELD=VALUE, e.g. fastcnn.lr=3e-3"),
    ("resnet.lr=1", "--set: unknown model 'resnet'; choose from logreg, mlp, dnn, lenet, fastcnn"),
    ("logreg.lr=1", "--set: logreg has no field 'lr'; it has decay, max_iter"),
    ("fastcnn.epochs=2.5", "--set: fastcnn.epochs: expected int, got 2.5"),
    ("fastcnn.epochs=0", "--set: fastcnn.epochs: 0 is out of range [1, 1000]"),
    ("fastcnn.lr=fast", "--set: fastcnn.lr: expected float, got 'fast'"),
    ("fastcnn.optimizer=adam", "--set: fastcnn.optimizer: 'adam' is not one of sgd, adamw"),
    ("fastcnn.epochs=none", "--set: fastcnn.epochs: must be set (got none)"),
    ("fastcnn.augment=3", "--set: fastcnn.augment: expected bool, got 3"),
    ("mlp.width=8", "--set: mlp.width: mlp has no convolutions"),
    ("lenet.width=none", "--set: lenet.width: must be set (got none)"),
    ("fastcnn.augmentation.elastic_share=2", "--set: fastcnn.augmentation.elastic_share: 2.0 is out of range [0, 1]"),
    ("fastcnn.augmentation.elastic_sigma=0",
     "--set: fastcnn.augmentation.elastic_sigma: 0.0 is out of range [0.5, 10]"),
])
def test_a_bad_set_is_one_line_naming_it(item, line):
    with pytest.raises(UserError) as caught:
        parse_sets([item])
    assert str(caught.value) == line


def test_the_most_specific_value_wins():
    """Shorthand for every net < params file < --set, field by field."""
    from_file = {"fastcnn": {"epochs": 6, "lr": 1e-3}}
    from_set = parse_sets(["fastcnn.epochs=8"])
    spec = spec_for("fastcnn", epochs=3, overrides=combine(from_file, from_set)["fastcnn"])
    assert (spec.epochs, spec.lr) == (8, 1e-3)
    assert spec_for("fastcnn", epochs=3).epochs == 3
    assert spec_for("logreg", epochs=3) == SPECS["logreg"]  # shorthands are for nets


def test_a_params_file_round_trips_and_names_its_study(tmp_path):
    path = write_params(tmp_path / "best.yaml", "fastcnn", {"lr": 0.002, "augmentation.degrees": 8.0},
                        {"name": "nightly", "trials": 20})
    read = read_params(path)
    assert read.values == {"fastcnn": {"lr": 0.002, "augmentation.degrees": 8.0}}
    assert read.tags()["fastcnn"]["params_study"] == "nightly" and len(read.tags()["fastcnn"]["params_file_digest"]) == 16


def test_a_params_file_may_nest_a_field_of_a_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("params:\n  fastcnn:\n    augmentation:\n      degrees: 4\n")
    assert read_params(path).values == {"fastcnn": {"augmentation.degrees": 4.0}}


@pytest.mark.parametrize(("text", "line"), [
    ("params: [1, 2]\n", "expected a mapping with a 'params' section of MODEL: {FIELD: VALUE}"),
    ("params:\n  fastcnn:\n    lr: [1\n", "not valid YAML"),
    ("params:\n  fastcnn:\n    lr: -1\n", "fastcnn.lr: -1.0 is out of range [1e-07, 10]"),
])
def test_a_bad_params_file_is_one_line_naming_the_file(tmp_path, text, line):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        read_params(path)
    assert str(caught.value).startswith(f"{path}: {line}")


def test_a_missing_params_file_is_named(tmp_path):
    with pytest.raises(UserError, match="no-such.yaml: no such params file"):
        read_params(tmp_path / "no-such.yaml")


@pytest.mark.parametrize("model", list(SPACES))
def test_every_search_space_names_real_fields_and_holds_the_default(model):
    """A study's first trial is the shipped default: each searched field's default must lie in its space."""
    values = flat_values(SPECS[model])
    for key, space in SPACES[model].items():
        assert key in values, key
        if isinstance(space, Choice):
            assert values[key] in space.options, key
        else:
            assert space.low <= values[key] <= space.high, key
        parse_sets([f"{model}.{key}={values[key]}"])  # within the bounds --set checks


def test_values_tuned_on_another_split_of_the_same_data_are_refused():
    from digitpipe.hyperparams import check_split

    tuned = {"data_digest": "ab" * 8, "protocol": "book", "split_seed": 7, "test_fraction": 0.25, "val_fraction": 0.1}
    ours = {"protocol": "book", "split_seed": 42, "test_fraction": 0.25, "val_fraction": 0.1}
    with pytest.raises(UserError) as caught:
        check_split(tuned, "ab" * 32, ours, "--params")
    assert str(caught.value).startswith("--params was tuned on another split of this data (split_seed 7, not 42)")
    check_split(tuned, "cd" * 32, ours, "--params")  # other data: no digit of it was tuned on
    check_split(tuned, "ab" * 32, {**ours, "split_seed": 7}, "--params")
    standard = {**tuned, "protocol": "standard"}
    check_split(standard, "ab" * 32, {**ours, "protocol": "standard"}, "--params")  # t10k is never tuned on
    check_split(tuned, "ab" * 32, {**ours, "protocol": "standard"}, "--params")  # tuned on the book's val part
    with pytest.raises(UserError, match=r"\(protocol standard, not book"):  # its val part: the book's test part
        check_split(standard, "ab" * 32, ours, "--params")
