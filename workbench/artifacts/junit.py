"""JUnit XML test reports as plain rows (pure: bytes in, rows out).

The format is a de-facto standard with dialects (Ant, Maven Surefire,
pytest, Jest): ``<testsuites>`` or a bare ``<testsuite>``, ``<testcase>``
with ``<failure>``, ``<error>`` or ``<skipped>`` children and a ``time`` in
seconds.  Documents with a DTD are refused: entity expansion is how XML
bombs work, and no test runner needs it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..errors import ArtifactError


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    suite: str | None
    classname: str | None
    name: str
    status: str  # passed | failed | error | skipped
    duration: float | None
    message: str | None


def _seconds(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def parse_junit(data: bytes, file: str = "<report>") -> list[TestCase]:
    if b"<!DOCTYPE" in data[:4096].upper() or b"<!ENTITY" in data.upper():
        raise ArtifactError(f"{file}: JUnit report with a DTD or entities is refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ArtifactError(f"{file}: not well-formed XML ({exc})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ArtifactError(f"{file}: not a JUnit report (root element <{root.tag}>)")
    out: list[TestCase] = []
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    for suite in suites:
        for case in suite.findall("testcase"):
            status, message = "passed", None
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    status = "failed" if tag == "failure" else tag
                    message = el.get("message") or (el.text or "").strip() or None
                    break
            out.append(TestCase(suite.get("name"), case.get("classname"), case.get("name") or "(unnamed)",
                                status, _seconds(case.get("time")), message))
    return out
