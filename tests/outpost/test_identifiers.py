"""Identifiers are matched whole: ``eve\\n`` is not ``eve``, ``<sha>\\n`` is not a sha.

Python's ``re.match(r"^[a-z]+$", "eve\\n")`` matches (``$`` matches before a
final newline); a stored ``eve\\n`` once broke every later user push. Every
validator in ``outpost/``, ``gateway/`` and ``provisioning/`` uses
``fullmatch`` (pydantic's patterns run on Rust's engine, where ``$`` is the
end of the text).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outpost.forms import FormDefinition, validate_submission
from outpost.wire import topics
from provisioning.ca import bridge_cn, check_gateway_id
from provisioning.errors import ProvisionError

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_ids_and_topics_refuse_a_final_newline() -> None:
    assert topics.valid_gateway_id("site-a")
    assert not topics.valid_gateway_id("site-a\n")
    assert topics.parse("outpost/v1/gw/site-a\n/up/envelopes") is None
    with pytest.raises(ValueError):
        topics.topic("site-a\n", topics.UP_ENVELOPES)


def test_provisioning_names_refuse_a_final_newline() -> None:
    assert bridge_cn("central-1") == "bridge.central-1"
    with pytest.raises(ProvisionError):
        bridge_cn("central-1\n")
    with pytest.raises(ProvisionError):
        check_gateway_id("site-a\n")


def test_an_attachment_field_refuses_a_sha_with_a_final_newline() -> None:
    form = FormDefinition.model_validate({"fields": [{"name": "photo", "type": "attachment"}]})
    sha = "a" * 64
    assert validate_submission(form, {"photo": sha}, {}, [sha]) == []
    assert validate_submission(form, {"photo": sha + "\n"}, {}, [sha + "\n"])


_PARTIAL = re.compile(r"\b(?:re|[A-Za-z_]*_(?:RE|PATH|PATTERN))\.match\(")


@pytest.mark.parametrize("package", ["outpost", "gateway", "provisioning"])
def test_no_validator_uses_a_partial_match(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _PARTIAL.search(line)
    ]
    assert not offenders, "use fullmatch:\n" + "\n".join(offenders)
