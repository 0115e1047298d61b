"""``easyrec sync``: send the tracking records a run kept because its MLflow tracker did not take them (the run
directory's ``tracking-pending.jsonl``) to the tracker now."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser
from easyrec.errors import DataError, EasyrecError

DESCRIPTION = """\
Send what a run could not give its MLflow tracker while it ran (the tracker was down, or did not answer within
logger.timeout seconds) from RUN_DIR/tracking-pending.jsonl to the tracker: the run itself, its params, metrics
(at their steps and times), tags, artifacts and its final status. Records are sent in order, and each is marked
sent once the tracker took it: running it again (after a failure, or after it succeeded) sends only the rest. When
all are sent, the file is renamed tracking-synced.jsonl."""

EXAMPLES = """examples:
  easyrec sync outputs/2026-01-31/12-00-00
  easyrec sync outputs/2026-01-31/12-00-00 --tracking-uri http://mlflow.internal:5000"""


def parser() -> CommandParser:
    parser = CommandParser("easyrec sync", DESCRIPTION, EXAMPLES)
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run directory of an `easyrec train` job")
    parser.add_argument(
        "--tracking-uri", help="send to this MLflow store instead of the one the run used (written in the file)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each record (default: %(default)s)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``easyrec sync`` command (arguments from ``sys.argv`` when ``argv`` is None); returns the records sent."""
    args = parser().parse_args(argv)
    if not (args.timeout > 0 and args.timeout < float("inf")):
        parser().error(f"argument --timeout: {args.timeout}: must be > 0 and finite (seconds)")
    return sync(args.run_dir, args.tracking_uri, args.timeout)


def sync(run_dir: Path, tracking_uri: str | None = None, timeout: float = 30.0) -> int:
    """Send ``run_dir``'s pending tracking records, those not marked sent already; mark each one sent as it goes,
    and rename the file ``tracking-synced.jsonl`` at the end. Returns the number of records sent."""
    from easyrec.loggers.courier import PENDING_FILE, SYNCED_FILE, Courier, TrackerDown, read_journal, within
    from easyrec.loggers.mlflow import deliver, local_store, open_client

    if not run_dir.is_dir():
        raise EasyrecError(f"{run_dir}: no such run directory")
    journal = run_dir / PENDING_FILE
    if not journal.is_file():
        done = " (it was synced: see tracking-synced.jsonl)" if (run_dir / SYNCED_FILE).is_file() else ""
        print(f"nothing to send: {run_dir} has no {PENDING_FILE}{done}")
        return 0
    try:
        lines = list(read_journal(journal))
    except ValueError as error:
        raise DataError(str(error)) from None
    marks = [record for _, record in lines if record["op"] == "sent" and isinstance(record.get("line"), int)]
    sent = {mark["line"]: mark.get("run_id") for mark in marks}
    to_send = [number for number, record in lines if record["op"] not in ("sent", "tracker") and number not in sent]
    target: dict[str, Any] = {"client": None, "run_id": None, "uri": None}  # where the next record goes
    courier = Courier(lambda item: deliver(target["client"], target["run_id"], item, run_dir, confined=True), timeout)
    count = 0
    for number, record in lines:
        op = record["op"]
        if op == "tracker":  # where the records after it belong
            uri = tracking_uri or record.get("tracking_uri")
            where = f"{journal}, line {number}"
            if not isinstance(uri, str):
                raise DataError(f"{where}: names no tracking URI; give one with --tracking-uri")
            store = local_store(uri)
            if store is not None and not store.exists():  # moved, or never there: not made anew here
                raise DataError(f"{where}: no MLflow store {uri} (in {Path.cwd()}); give one with --tracking-uri")
            try:
                client = within(timeout, lambda uri=uri: open_client(uri))
            except TrackerDown as error:
                raise EasyrecError(f"{where}: MLflow at {uri} cannot be opened ({error})") from None
            target.update(client=client, run_id=record.get("run_id"), uri=uri)
            continue
        if op == "sent":
            continue
        if number in sent:
            target["run_id"] = sent[number] or target["run_id"]
            continue
        if target["client"] is None:
            raise DataError(f"{journal}, line {number}: a record before the line naming its tracker")
        target["run_id"] = courier.call(record)
        if courier.down:
            raise EasyrecError(
                f"{journal}, line {number}: MLflow at {target['uri']} did not take it ({courier.down}); {count} of "
                f"{len(to_send)} records sent, the rest are kept: run `easyrec sync {run_dir}` again"
            )
        with journal.open("a") as marks:
            marks.write(json.dumps({"op": "sent", "line": number, "run_id": target["run_id"]}) + "\n")
        count += 1
    journal.replace(run_dir / SYNCED_FILE)
    print(f"sent {count} records to MLflow run {target['run_id']} at {target['uri']}; {journal} is now {SYNCED_FILE}")
    return count
