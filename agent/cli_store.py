"""Commands over the store and keys: evidence list/show, store reindex/fsck, keys, export."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from affidavit.agent.cli_app import App, emit_json

pass_app = click.make_pass_decorator(App)


def _store(app: App) -> Any:
    from affidavit.store.local import LocalStore

    loaded = app.load()
    return LocalStore.open(loaded.config.store.path, create=False)


def _record_json(a: Any) -> dict[str, Any]:
    from affidavit.signing.predicate import artefact_entry

    return {"run_id": a.run_id, **artefact_entry(a)}


@click.group()
def evidence() -> None:
    """Browse the evidence in the store."""


@evidence.command("list")
@click.option("--control", help="Only artefacts mapped to this control id.")
@click.option("--name", help="Only artefacts whose name contains this text.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def evidence_list(app: App, control: str | None, name: str | None, as_json: bool) -> None:
    """List stored artefacts, oldest run first."""
    store = _store(app)
    rows = [a for a in store.artefacts(control=control) if name is None or name in a.name]
    if as_json:
        emit_json([_record_json(a) for a in rows])
        return
    for a in rows:
        click.echo(f"{a.collected_at:%Y-%m-%d %H:%M}Z  sha256:{a.digest[:12]}  {a.size:>10}  {a.name}  "
                   f"{' '.join(a.controls)}")
    click.echo(f"{len(rows)} artefact(s)", err=True)


@evidence.command("show")
@click.argument("ref")
@click.option("--content", is_flag=True, help="Write the artefact's bytes to stdout instead.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def evidence_show(app: App, ref: str, content: bool, as_json: bool) -> None:
    """Show one artefact by name or by digest (a unique prefix is enough)."""
    store = _store(app)
    ref_hex = ref.removeprefix("sha256:")
    matches = [a for a in store.artefacts() if a.name == ref or a.digest.startswith(ref_hex)]
    if not matches:
        raise click.UsageError(f"no artefact named or with digest {ref!r}; see `affidavit evidence list`")
    digests = {a.digest for a in matches}
    if len(digests) > 1:
        raise click.UsageError(f"{ref!r} matches {len(digests)} artefacts; give more of the digest")
    latest = matches[-1]
    if content:
        with store.open_blob(latest.digest) as f:
            while chunk := f.read(1 << 20):
                sys.stdout.buffer.write(chunk)
        return
    if as_json:
        emit_json({**_record_json(latest), "runs": [a.run_id for a in matches]})
        return
    rec = _record_json(latest)
    for key in ("name", "digest", "media_type", "size", "collector", "collected", "ttl", "effective"):
        if key in rec:
            click.echo(f"{key:11} {rec[key]}")
    click.echo(f"{'controls':11} {' '.join(latest.controls) or '-'}")
    for f in latest.findings:
        click.echo(f"{'finding':11} {f.get('control')} {f.get('result')}: {f.get('reason')}")
    for r in latest.redactions:
        click.echo(f"{'redacted':11} {r.get('path')} ({r.get('rule')})")
    click.echo(f"{'runs':11} {', '.join(a.run_id for a in matches)}")


def _period(text: str | None) -> tuple[datetime | None, datetime | None]:
    """``FROM..TO`` (ISO dates or times, UTC; either side may be empty)."""
    if not text:
        return None, None
    if ".." not in text:
        raise click.BadParameter("write FROM..TO, e.g. 2026-01-01..2026-12-31 (either side may be empty)")
    out: list[datetime | None] = []
    for part in text.split("..", 1):
        if not part:
            out.append(None)
            continue
        try:
            t = datetime.fromisoformat(part.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not an ISO date or time") from None
        out.append(t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))
    if out[0] and out[1] and out[1] <= out[0]:
        raise click.BadParameter("the effective period ends before it starts")
    return out[0], out[1]


@evidence.command("add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--control", "controls", multiple=True, required=True, metavar="ID",
              help="Common control the document evidences, e.g. common:CC-MGMT-REVIEW (repeatable).")
@click.option("--note", help="Why this document is evidence (signed with it).")
@click.option("--effective", metavar="FROM..TO", help="The period the document speaks for, e.g. 2026-01-01..2026-12-31.")
@click.option("--ttl", default="365d", show_default=True, help="How long it counts as fresh.")
@click.option("--by", "added_by", help="Who adds it (default: user@host).")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@pass_app
def evidence_add(app: App, file: Path, controls: tuple[str, ...], note: str | None, effective: str | None,
                 ttl: str, added_by: str | None, as_json: bool) -> None:
    """Sign and store a document a person provides (a signed-off policy, a training record,
    management review minutes). It counts in coverage like collected evidence."""
    import dataclasses
    import difflib
    import getpass
    import socket

    from affidavit.agent.keyring import check_in_force, configured_signer
    from affidavit.agent.runner import collect, log_signer_loader
    from affidavit.collectors.manual import ManualCollector, ManualOptions
    from affidavit.config.catalog import library_paths, load_library
    from affidavit.config.durations import parse_duration
    from affidavit.config.models import SourceConfig

    loaded = app.load()
    library = load_library(library_paths(loaded.config.controls.extra, loaded.base_dir))
    known = [c.id for c in library.common_controls()]
    for c in controls:
        if library.common_control_or_none(c) is None:
            close = difflib.get_close_matches(c, known, n=1)
            raise click.BadParameter(f"{c!r} is not a common control" + (f"; did you mean {close[0]!r}?" if close
                                     else " (see `affidavit controls`)"), param_hint="--control")
    start, end = _period(effective)
    try:
        ttl_delta = parse_duration(ttl)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--ttl") from None
    options = ManualOptions(file=(app.cwd / file).resolve(), controls=controls,
                            added_by=added_by or f"{getpass.getuser()}@{socket.gethostname()}", note=note,
                            effective_from=start, effective_to=end, ttl=ttl_delta)
    source = SourceConfig(name="manual", type="manual")
    manual = dataclasses.replace(loaded, collectors={**loaded.collectors, "manual": ManualCollector},
                                 options={**loaded.options, "manual": options})
    sc = loaded.config.signing
    signer = configured_signer(sc, app.env, app.prompt())
    check_in_force(sc, loaded.base_dir, signer.keyid)
    notes: list[str] = []
    report = collect(manual, signer, [source], log_signer=log_signer_loader(loaded, app.env, app.prompt(), notes))
    for note in notes:
        click.echo(note, err=True)
    result = report.results[0]
    if as_json:
        emit_json(report.to_json())
    elif result.status == "signed":
        doc = result.artefacts[0]
        click.echo(f"signed {doc.name} (sha256:{doc.digest[:12]}…) for {', '.join(controls)} in run {result.run_id}")
    else:
        click.echo(f"error: {result.error}", err=True)
    click.get_current_context().exit(report.exit_code)


@click.group("store")
def store_group() -> None:
    """Maintain the local store."""


@store_group.command("reindex")
@pass_app
def store_reindex(app: App) -> None:
    """Rebuild the SQLite index from the signed attestations and blobs."""
    n = _store(app).reindex()
    click.echo(f"reindexed {n} run(s)")


@store_group.command("fsck")
@click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="Also check every signature against this public key (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_app
def store_fsck(app: App, keys: tuple[Path, ...], as_json: bool) -> None:
    """Check the store: blob digests, attestations, signatures, index. Exit 1 on any error."""
    from affidavit.signing.keys import load_public_key_file

    store = _store(app)
    problems = store.fsck([load_public_key_file(k) for k in keys])
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        emit_json({"ok": not errors, "problems": [p.__dict__ for p in problems]})
    else:
        for p in problems:
            click.echo(f"{p.severity}: {p.where}: {p.problem}")
        click.echo("store is consistent" if not errors else f"{len(errors)} error(s)", err=True)
    click.get_current_context().exit(1 if errors else 0)


@click.group()
def keys() -> None:
    """Signing keys: generate, rotate, revoke; export the public key and the auditor's trust file."""


@keys.command("generate")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Where to write the key (default: signing.key from the config, else ./affidavit.key.pem).")
@click.option("--algorithm", type=click.Choice(["ecdsa-p256", "ed25519"]), default="ecdsa-p256", show_default=True)
@pass_app
def keys_generate(app: App, out: Path | None, algorithm: str) -> None:
    """Generate an encrypted signing key and its public key file beside it."""
    from affidavit.agent.keyring import create_key

    loaded = app.load(required=False)
    key = (app.cwd / out) if out else (loaded.config.signing.key_file if loaded else app.cwd / "affidavit.key.pem")
    pw_file = loaded.config.signing.passphrase_file if loaded and not out else None
    new = create_key(key, algorithm, pw_file, app.env, app.prompt())  # type: ignore[arg-type]
    click.echo(f"generated {key} (keyid {new.signer.keyid}); public key: {new.public_path}", err=True)
    if new.passphrase_file:
        click.echo(f"wrote a random key passphrase to {new.passphrase_file} (mode 0600)", err=True)


@keys.command("export-public")
@pass_app
def keys_export_public(app: App) -> None:
    """Print the signing key's public key (PEM) on stdout: give it to your auditor."""
    from affidavit.agent.keyring import configured_signer
    from affidavit.signing.keys import public_pem

    sc = app.load().config.signing
    signer = configured_signer(sc, app.env, app.prompt())
    click.echo(public_pem(signer.public_key).decode("ascii"), nl=False)


@keys.command("rotate")
@pass_app
def keys_rotate(app: App) -> None:
    """Replace the signing key with a new one (same passphrase).

    The old private key is kept as affidavit.key.<keyid8>.pem and its public key
    stays in the key history (affidavit.keys.json) with its validity window, so
    evidence it signed still verifies with the trust file (`keys trust-export`).
    Give your auditor the new trust file after a rotation.
    """
    from affidavit.agent.keyring import rotate_key

    loaded = app.load()
    done = rotate_key(loaded.config.signing, loaded.base_dir, app.env, app.prompt())
    if done.old_keyid is None:
        click.echo(f"finished an interrupted rotation: the signing key is now {done.new_keyid} "
                   f"(key history {done.history})", err=True)
        return
    click.echo(f"rotated the signing key: {done.old_keyid} -> {done.new_keyid}; the old key is kept as "
               f"{done.retired}; key history {done.history}", err=True)
    click.echo("next: `affidavit keys trust-export --out trust.json` for your auditor", err=True)


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2026-03-01T12:00:00Z",
                                 param_hint="--at") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@keys.command("revoke")
@click.argument("keyid")
@click.option("--at", "at", metavar="TIME", help="When the key stopped being trustworthy (ISO 8601, UTC unless "
              "a zone is given; default now). Set it to when a compromise began.")
@pass_app
def keys_revoke(app: App, keyid: str, at: str | None) -> None:
    """Record in the key history that KEYID (or its first 8+ hex digits) is revoked.

    Verifiers given the trust file then refuse the key's signatures unless a
    trusted timestamp proves they were made before the revocation.
    """
    from affidavit.agent.keyring import revoke_key
    from affidavit.signing.predicate import utc_iso

    loaded = app.load()
    revoked, when = revoke_key(loaded.config.signing, loaded.base_dir, keyid, app.env, app.prompt(), at=_utc(at))
    click.echo(f"revoked key {revoked} from {utc_iso(when)}; give your auditor a new trust file "
               "(`affidavit keys trust-export`)", err=True)


@keys.command("trust-export")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the trust file (- for stdout).")
@click.option("--comment", help="Free text for the auditor, kept in the file.")
@pass_app
def keys_trust_export(app: App, out: Path, comment: str | None) -> None:
    """Write the trust file to hand to your auditor (`affidavit verify --trust FILE`).

    It lists every signing key in the key history with its validity window and
    revocation, the transparency log's key, and the TSA roots (signing.tsa_roots).
    """
    import json

    from affidavit.agent.keyring import export_trust
    from affidavit.signing.trust import write_atomically

    loaded = app.load()
    doc = export_trust(loaded.config.signing, loaded.base_dir, loaded.config.store.path, app.env, app.prompt(),
                       comment=comment)
    data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    if str(out) == "-":
        click.echo(data.decode("utf-8"), nl=False)
        return
    write_atomically(app.cwd / out, data)
    click.echo(f"wrote {app.cwd / out}: {len(doc['keys'])} signing key(s), {len(doc['log_keys'])} log key(s), "
               f"{len(doc['tsa_roots'])} TSA root(s)", err=True)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Bundle to write: .tar.gz (default form), .tar, or a directory.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only runs started at or after this UTC time.")
@click.option("--control", "controls", multiple=True, metavar="ID",
              help="Only runs with evidence mapped to this control (repeatable).")
@pass_app
def export(app: App, out: Path, since: datetime | None, controls: tuple[str, ...]) -> None:
    """Write a self-contained, signed auditor bundle of the stored evidence.

    With signing.tsa_url, the bundle statement's signature is timestamped
    (bundle.tsr) and trusted_root.json names the timestamp authority.
    """
    from affidavit.agent.export import export_bundle
    from affidavit.agent.keyring import check_in_force, configured_signer
    from affidavit.agent.pipeline import Timestamper
    from affidavit.agent.runner import agent_name
    from affidavit.config.catalog import library_paths, load_library
    from affidavit.store.local import LocalStore

    loaded = app.load()
    store = LocalStore.open(loaded.config.store.path, create=False)
    library = load_library(library_paths(loaded.config.controls.extra, loaded.base_dir))
    sc = loaded.config.signing
    timestamper = Timestamper.from_config(sc)
    signer = configured_signer(sc, app.env, app.prompt())
    check_in_force(sc, loaded.base_dir, signer.keyid)
    try:
        summary = export_bundle(
            store, signer, app.cwd / out, agent=agent_name(loaded), now=datetime.now(UTC),
            since=since.replace(tzinfo=UTC) if since else None, controls=list(controls),
            library_files=[(f.bundle_path, f.data) for f in library.files],
            timestamp=timestamper, authorities_of=timestamper.authorities if timestamper else None,
        )
    finally:
        if timestamper is not None:
            timestamper.close()
    logged = f"; runs proved against log checkpoint {summary.log_size}" if summary.log_size else ""
    stamped = f"; timestamped by {sc.tsa_url}" if timestamper else ""
    click.echo(f"wrote {summary.path}: {summary.runs} run(s), {summary.artefacts} artefact(s), "
               f"{summary.members} members, signed by keyid {signer.keyid[:16]}…{logged}{stamped}")


COMMANDS = [evidence, store_group, keys, export]
