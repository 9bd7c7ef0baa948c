"""The committed AsyncAPI document is the one the code generates."""

from __future__ import annotations

import yaml

from deploy.asyncapi import DOC, render


def test_committed_asyncapi_is_current() -> None:
    assert DOC.exists(), "docs/asyncapi.yaml missing: run `make asyncapi`"
    assert DOC.read_text() == render(), "docs/asyncapi.yaml is out of date: run `make asyncapi`"


def test_every_public_subject_is_documented() -> None:
    doc = yaml.safe_load(render())
    addresses = {ch.get("address", "") for ch in doc["channels"].values()}
    text = " ".join(addresses)
    for subject in (
        "watch.check.",
        "watch.service.",
        "watch.event.status.",
        "watch.event.sla.",
        "watch.probe.run",
        "watch.dlq.",
    ):
        assert subject in text, f"{subject} missing from the AsyncAPI channels: {sorted(addresses)}"
