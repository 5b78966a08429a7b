"""Commands on the registry: list the versions, move the champion by hand, write a version's evidence card, export
(and quantize) a version, build a version's drift reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.app import ConfigOption, UnlockedOption, app, monitor_app
from digitpipe.config import load_tracking_config
from digitpipe.errors import DataError, UserError


@app.command()
def promote(
    version: Annotated[str | None, typer.Option(help="Make this version the champion by hand (recorded).")] = None,
    rollback: Annotated[bool, typer.Option(help="Swap champion and previous_champion back.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Move the champion alias by hand: to --version N, or back to the previous champion with --rollback."""
    from digitpipe import promotion

    if (version is None) == (not rollback):
        raise UserError("give exactly one of --version N or --rollback")
    registry = _registry(config, unlocked_promotion)
    cfg = registry.cfg
    if rollback:
        restored, demoted = promotion.rollback(registry)
        typer.echo(f"{cfg.registered_model}: {cfg.champion_alias} -> v{restored}, {cfg.previous_alias} -> v{demoted}")
    else:
        verdict = promotion.promote_by_hand(registry, version)
        typer.echo(f"{cfg.registered_model}: {cfg.champion_alias} -> v{version} ({verdict.reason})")


@app.command()
def approve(
    version: Annotated[str, typer.Option(help="The version awaiting approval.")],
    comment: Annotated[str, typer.Option(help="Why (recorded on the version).")],
    reject: Annotated[bool, typer.Option(help="Reject it instead: the champion stays.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Decide on a version that earned promotion under promotion.approval: required: approve it (it becomes the
    champion, if the champion is still the one it beat) or --reject it."""
    from digitpipe import approval

    registry = _registry(config, unlocked_promotion)
    verdict = approval.decide(registry, version, comment, approve=not reject)
    cfg = registry.cfg
    moved = f"{cfg.champion_alias} -> v{version}" if verdict.promoted else f"{cfg.champion_alias} unchanged"
    typer.echo(f"{cfg.registered_model} v{version} {verdict.kind.value}: {moved} ({verdict.said})")


@app.command()
def approvals(unlocked_promotion: UnlockedOption = False, config: ConfigOption = None) -> None:
    """The versions awaiting approval; those waiting past approval_timeout_hours become not_approved (what a
    schedule runs: a suspension has no timeout of its own)."""
    from digitpipe import approval

    registry = _registry(config, unlocked_promotion)
    for version in approval.expire(registry):
        typer.echo(f"v{version} not_approved: waited past approval_timeout_hours")
    rows = approval.waiting(registry)
    for row in rows:
        typer.echo(f"v{row.version} {row.model_name} awaiting approval since {row.verdict.at}: {row.verdict.said}")
    if not rows:
        typer.echo(f"{registry.cfg.registered_model}: no version is awaiting approval")


def _registry(config: Path | None, unlocked_promotion: bool):
    """The registry of the settings in `config`, with the promotion lock the CLI can take."""
    return _tracker(config, unlocked_promotion).registry


def _tracker(config: Path | None, unlocked_promotion: bool):
    """The store of the settings in `config`, its registry with the promotion lock the CLI can take."""
    from digitpipe.tracking import tracker_for
    from flows.locks import PromotionLock, lock_mode

    tracking = load_tracking_config(config)
    return tracker_for(tracking, PromotionLock(tracking, lock_mode(unlocked_promotion)), create=False)


@app.command()
def gc(
    keep: Annotated[int, typer.Option(min=0, help="How many of the newest versions to keep whatever they are.")],
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = False,
    unlocked_promotion: UnlockedOption = False,
    config: ConfigOption = None,
) -> None:
    """Delete registered versions beyond the newest --keep N, with their model files and runs; a version an alias
    names, or one awaiting approval, is never deleted. A kept version's evidence card keeps its comparison with a
    deleted one."""
    tracker = _tracker(config, unlocked_promotion)
    if not dry_run:  # a killed run's leftovers judged first: its unjudged version is then one gc may delete
        tracker.end_orphans()
    registry = tracker.registry
    gone = registry.retention.collect_garbage(keep, dry_run)
    doing = "would delete" if dry_run else "deleted"
    for version in gone:
        typer.echo(f"{doing} v{version.version} ({version.model_name}, "
                   f"{version.verdict.kind.value if version.verdict else 'not judged'}, registered {version.created})")
    typer.echo(f"{registry.cfg.registered_model}: {doing} {len(gone)} version(s), kept the newest {keep} and every "
               "version an alias names or that awaits approval")


@app.command()
def models(config: ConfigOption = None) -> None:
    """The registered model's versions: aliases, held-out accuracy, and the promotion verdict of each."""
    from digitpipe.progress import print_versions
    from digitpipe.tracking import tracker_for

    registry = tracker_for(load_tracking_config(config), create=False).registry
    print_versions(registry.cfg.registered_model, registry.versions())


@app.command()
def card(
    version: Annotated[str, typer.Option(help="The registered version whose card to write.")],
    data: Annotated[Path | None, typer.Option(
        help="Its training data, where it moved since (the version's run names its own).")] = None,
    output: Annotated[Path | None, typer.Option(help="Also keep the card here (default: outputs/cards/vN).")] = None,
    config: ConfigOption = None,
) -> None:
    """Write the evidence card of a version (one registered before cards existed, or again): scored on the
    held-out part of its own split, logged on its run and named by its evidence_card tag. A version that has a card
    gets a new revision beside it (card-revisions/N): the card of its decision stays as it is."""
    from digitpipe.card import where_logged, write_card
    from digitpipe.files import output_folder
    from digitpipe.model_loading import training_split
    from digitpipe.records.models import ModelIdentity
    from digitpipe.tracking import tracker_for

    folder = output or Path("outputs") / "cards" / f"v{version}"
    output_folder(folder, "--output")  # the default too: checked before the card is scored
    registry = tracker_for(load_tracking_config(config), create=False).registry
    registry.version_tags(version)  # a clear error for a version that does not exist
    identity = ModelIdentity(f"v{version}", registry.cfg.registered_model, version)
    split, made_from = training_split(registry, identity, data, None, None,
                                      held_out_only=True)  # a card scores the held-out part only
    made = write_card(registry, version, split.test, folder)
    typer.echo(f"{registry.cfg.registered_model} v{version} ({made['model']['name']}): held-out accuracy "
               f"{made['held_out']['accuracy']:.2%} on {made['held_out']['images']:,} images of {made_from}; "
               f"{where_logged(made)} and in {folder}")


@app.command()
def export(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file.")],
    output: Annotated[Path, typer.Option(help="Where to write the ONNX file.")],
    quantize: Annotated[bool, typer.Option(help="Static QDQ int8, kept only if held-out accuracy holds.")] = False,
    data: Annotated[Path | None, typer.Option(
        help="Labelled data: calibration (train part), check (held-out part). A registry model's training run "
             "names its own; --data replaces it only if it reproduces the recorded split.")] = None,
    protocol: Annotated[str | None, typer.Option(help="With a .onnx file: book or standard, the split to check on.")]
    = None,
    seed: Annotated[int | None, typer.Option(min=0, max=2**32 - 1,  # numpy's and scikit-learn's seeds are 32-bit
                                             help="With a .onnx file: the seed of the split to check on.")] = None,
    max_drop: Annotated[float, typer.Option(min=-1, max=1, help="Largest accepted accuracy drop, as a fraction "
                                                                 "(below 0: the int8 copy must gain).")] = 0.001,
    config: ConfigOption = None,
) -> None:
    """Write a model's ONNX file; with --quantize, an int8 version, recorded in the registry with its verdict."""
    import shutil
    import tempfile

    from cli.data import not_an_input
    from digitpipe.files import atomic_path, output_file
    from digitpipe.model_loading import load_model, training_split
    from digitpipe.onnx_scorer import OnnxScorer

    output_file(output, "--output")
    if output.exists() and output.resolve() == Path(model).resolve():
        raise UserError(f"--output {output}: the model file itself; choose another name")
    not_an_input(output, "--output", data, config)
    if quantize:
        _check_split_flags(model, data, protocol, seed)
    tracking = load_tracking_config(config)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        loaded = load_model(model, tracking, Path(tmp), prefer_int8=False, drift=False)
        registry, path, identity = loaded.registry, loaded.path, loaded.identity
        if registry is None:  # a file: an ONNX model, not only a file (a registered one was checked by its SHA-256)
            OnnxScorer(path)
        if not quantize:
            with atomic_path(output) as tmp_output:  # its folder made where missing; never half a file
                shutil.copyfile(path, tmp_output)
            typer.echo(f"wrote {output}")
            return
        from digitpipe.export import quantize_checked

        split, made_from = training_split(registry, identity, data, protocol, seed)
        checked_on = f"checked on the held-out part of {made_from}"
        result = quantize_checked(path, split.train.images[:1024], split.test, output, max_drop)
    if registry is not None:
        registry.quantization.record(identity, result, checked_on)
    typer.echo(f"{result.reason()}, {checked_on}" + (f" -> {output}" if result.accepted else ""))
    if not result.accepted:
        raise typer.Exit(1)


def _check_split_flags(model: str, data: Path | None, protocol: str | None, seed: int | None) -> None:
    """export --quantize's flags of the split it checks on, said before a registered model is downloaded."""
    from digitpipe.data.formats import check_protocol, check_readable
    from digitpipe.records.models import ModelRef

    if ModelRef.parse(model).registered and (protocol is not None or seed is not None):
        raise UserError(f"{model} is checked on its training run's split: leave out --protocol and --seed")
    if protocol is not None and protocol not in ("book", "standard"):
        raise UserError(f"--protocol {protocol!r}: expected book or standard")
    if data is not None:
        check_readable(data, "train" if protocol == "standard" else None)
        check_protocol(data, protocol or "book")


@monitor_app.command("reference")
def monitor_reference(
    model: Annotated[str, typer.Option(help="models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file.")],
    data: Annotated[Path | None, typer.Option(
        help="Its training data: a registry version's run names its own (--data only where it moved).")] = None,
    protocol: Annotated[str | None, typer.Option(help="With a .onnx file: book or standard.")] = None,
    seed: Annotated[int | None, typer.Option(help="With a .onnx file: the split's seed.")] = None,
    output: Annotated[Path | None, typer.Option(help="With a .onnx file: where to write the reference.")] = None,
    config: ConfigOption = None,
) -> None:
    """Build a model's drift reference from the split it was trained on: for versions registered before digitpipe
    recorded references (logged on the version's run), or a .onnx file (written to --output)."""
    import shutil
    import tempfile

    from digitpipe.model_loading import load_model, training_split
    from digitpipe.monitoring.drift import build_reference, write_reference

    tracking = load_tracking_config(config)
    with tempfile.TemporaryDirectory(prefix="digitpipe-model-") as tmp:
        loaded = load_model(model, tracking, Path(tmp), prefer_int8=False, drift=False)
        registry, path, identity = loaded.registry, loaded.path, loaded.identity
        if registry is None and output is None:
            raise UserError("a .onnx file has no run to record its reference on: give --output")
        try:
            split, made_from = training_split(registry, identity, data, protocol, seed)
        except DataError as exc:
            raise UserError(f"no reference for {model}: {exc}") from None
        written = write_reference(path, build_reference(split.train.images), split.test, Path(tmp))
        if registry is None:
            typer.echo(f"wrote {shutil.copyfile(written, output)} (from {made_from})")
            return
        registry.monitor_references.record(identity, written)
    typer.echo(f"recorded the drift reference of {model} on its run (from {made_from})")
