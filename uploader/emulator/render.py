"""The emulator's answer bodies: XML for submit and status, as Target writes them.

Pure string building. Values are escaped, and characters XML 1.0 cannot
carry (control characters in an id) become U+FFFD, so a client's strict
parser always gets a well-formed document.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from uploader.emulator.store import Batch

__all__ = ["error_xml", "status_xml", "submit_xml"]

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: str) -> str:
    return escape(_NOT_XML.sub("\ufffd", value))


def submit_xml(status_url: str) -> str:
    return (
        "<response><success>true</success>"
        f"<batchStatus>{_text(status_url)}</batchStatus>"
        "<message>Batch submitted for processing</message></response>"
    )


def error_xml(message: str) -> str:
    return f"<response><success>false</success><message>{_text(message)}</message></response>"


def status_xml(batch: Batch, details: bool) -> str:
    """Status of one batch; per-profile elements (v2, details) list failed rows only."""
    parts = [
        "<response>",
        f"<batchId>{_text(batch.batch_id)}</batchId>",
        f"<status>{batch.status.value}</status>",
        f"<batchSize>{batch.size}</batchSize>",
    ]
    if details:
        parts += [
            f"<consumedCount>{batch.consumed}</consumedCount>",
            f"<successfulUpdates>{batch.successful}</successfulUpdates>",
            f"<profilesNotFound>{batch.not_found}</profilesNotFound>",
            f"<failedUpdates>{batch.failed}</failedUpdates>",
        ]
        if batch.api == "v2":
            parts += [
                f"<profile><id>{_text(pid)}</id><status>error</status>"
                f"<message>{_text(message)}</message></profile>"
                for pid, message in batch.failures
            ]
    parts.append("</response>")
    return "".join(parts)
