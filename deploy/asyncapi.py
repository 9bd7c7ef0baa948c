"""`python -m deploy.asyncapi [--check]`: the AsyncAPI document of Watch Server's events.

Generated from the brokers the services really run (each service's `build_broker`), so the
document cannot drift from the code; `--check` fails when docs/asyncapi.yaml is out of date.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from faststream.specification import AsyncAPI

from services.aggregator.broker import build_broker as aggregator_broker
from services.api.broker import build_broker as api_broker
from services.prober.broker import build_broker as prober_broker
from services.recorder.broker import build_broker as recorder_broker
from shared.events import SCHEMA_VERSION
from shared.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
DESCRIPTION = " ".join(
    f"""
    The public event contract of Watch Server (event schemaVersion {SCHEMA_VERSION}).
    JSON, UTF-8, camelCase fields, UTC ISO-8601 times, `schemaVersion` in every event.
    Adding an optional field is compatible; renaming, removing or changing a meaning bumps
    schemaVersion. Checks carry `Nats-Msg-Id` = checkId (JetStream deduplication).
    Dead-lettered messages keep their original bytes and carry the headers
    Watch-Dlq-Reason, Watch-Dlq-Subject and Watch-Dlq-Consumer.
    """.split()
)


def render() -> str:
    """The AsyncAPI 3.0 document as YAML."""
    settings = Settings(nats_url="nats://nats:4222")
    # The api's request publisher and the prober's responder are one channel: the prober's
    # declaration (which documents the reply) comes last so it is the one kept.
    brokers = [
        api_broker(settings),
        prober_broker(settings),
        recorder_broker(settings),
        aggregator_broker(settings),
    ]
    spec = AsyncAPI(
        *brokers,
        title="Watch Server events",
        version=str(SCHEMA_VERSION),
        description=DESCRIPTION,
        schema_version="3.0.0",
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Overwrite broker", category=RuntimeWarning)
        document = spec.to_specification().to_jsonable()
    # Sorted keys: the brokers' registration order must not reorder the committed file.
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is out of date: run `make asyncapi`", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
