"""workbench.server.forges without a server: signatures, events, delivery ids, payloads, URL matching."""
from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from workbench.server import forges as F

SECRET = "s3cret-ü"
BODY = b'{"ref": "refs/heads/main", "repository": {"clone_url": "https://github.com/Org/App.git"}}'


def hexmac(body: bytes = BODY, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("forge", "headers"), [
    ("github", {"X-Hub-Signature-256": f"sha256={hexmac()}"}),
    ("github", {"x-hub-signature-256": f"sha256={hexmac().upper()}"}),
    ("gitlab", {"X-Gitlab-Token": SECRET.encode().decode("latin-1")}),  # as an HTTP server decodes the bytes
    ("gitea", {"X-Gitea-Signature": hexmac()}),
    ("gitea", {"X-Forgejo-Signature": hexmac()}),
    ("bitbucket", {"X-Hub-Signature": f"sha256={hexmac()}"}),
])
def test_a_right_signature_holds(forge: str, headers: dict[str, str]) -> None:
    assert F.check_signature(forge, headers, BODY, SECRET) is None


@pytest.mark.parametrize(("forge", "headers", "why"), [
    ("github", {}, "no X-Hub-Signature-256"),
    ("github", {"X-Hub-Signature-256": f"sha256={hexmac(secret='other')}"}, "does not match"),
    ("github", {"X-Hub-Signature-256": f"sha1={hexmac()}"}, "not sha256"),
    ("github", {"X-Hub-Signature-256": hexmac()}, "not sha256"),
    ("github", {"X-Hub-Signature-256": "sha256=\u00e9\u00e9"}, "does not match"),
    ("gitlab", {}, "no X-Gitlab-Token"),
    ("gitlab", {"X-Gitlab-Token": "guess"}, "does not match"),
    ("gitea", {"X-Gitea-Signature": f"sha256={hexmac()}"}, "does not match"),
    ("gitea", {}, "no X-Gitea-Signature"),
    ("bitbucket", {"X-Hub-Signature": f"sha256={hexmac(BODY + b' ')}"}, "does not match"),
])
def test_a_wrong_or_missing_signature_says_why(forge: str, headers: dict[str, str], why: str) -> None:
    reason = F.check_signature(forge, headers, BODY, SECRET)
    assert reason is not None and why in reason


def test_events_delivery_ids_and_kinds() -> None:
    assert F.kind_of("github", F.event_of("github", {"X-GitHub-Event": "push"})) == "push"
    assert F.kind_of("github", F.event_of("github", {"X-GitHub-Event": "ping"})) == "ping"
    assert F.kind_of("github", "issues") == "other"
    assert F.kind_of("gitlab", F.event_of("gitlab", {"X-Gitlab-Event": "Tag Push Hook"})) == "push"
    assert F.kind_of("gitea", F.event_of("gitea", {"X-Forgejo-Event": "push"})) == "push"
    assert F.kind_of("bitbucket", F.event_of("bitbucket", {"X-Event-Key": "repo:refs_changed"})) == "push"
    assert F.kind_of("bitbucket", "diagnostics:ping") == "ping"
    assert F.event_of("github", {}) == ""
    assert F.delivery_id("github", {"X-GitHub-Delivery": "72d3162e"}, BODY) == "72d3162e"
    assert F.delivery_id("gitlab", {"X-Gitlab-Event-UUID": "u-1"}, BODY) == "u-1"
    assert F.delivery_id("gitea", {"X-Gitea-Delivery": "g-1"}, BODY) == "g-1"
    # a Bitbucket hook's X-Hook-UUID repeats on every delivery: the body's hash, not the hook, identifies it
    assert F.delivery_id("bitbucket", {"X-Hook-UUID": "hook"}, BODY) == "sha256:" + hashlib.sha256(BODY).hexdigest()
    assert F.delivery_id("bitbucket", {"X-Request-UUID": "r-1", "X-Hook-UUID": "hook"}, BODY) == "r-1"
    assert F.delivery_id("github", {"X-GitHub-Delivery": "x" * 500}, BODY).startswith("sha256:")
    assert F.delivery_id("github", {}, None) == "(body not read)"


def test_payloads_of_each_forge() -> None:
    github = {"ref": "refs/heads/main", "repository": {"clone_url": "https://github.com/o/r.git",
                                                       "ssh_url": "git@github.com:o/r.git",
                                                       "html_url": "https://github.com/o/r"}}
    p = F.parse_payload(json.dumps(github).encode())
    assert p.urls == ("https://github.com/o/r.git", "git@github.com:o/r.git", "https://github.com/o/r")
    assert p.ref == "refs/heads/main" and p.repository == "https://github.com/o/r.git"
    gitlab = {"ref": "refs/heads/main", "project": {"git_http_url": "https://gl.example/g/r.git",
                                                    "git_ssh_url": "git@gl.example:g/r.git"},
              "repository": {"git_http_url": "https://gl.example/g/r.git", "homepage": "https://gl.example/g/r"}}
    assert F.parse_payload(json.dumps(gitlab).encode()).urls == (
        "https://gl.example/g/r.git", "https://gl.example/g/r", "git@gl.example:g/r.git")
    server = {"changes": [{"refId": "refs/heads/main"}], "repository": {"links": {
        "clone": [{"href": "ssh://git@bb.example:7999/prj/r.git", "name": "ssh"},
                  {"href": "https://bb.example/scm/prj/r.git", "name": "http"}],
        "self": [{"href": "https://bb.example/projects/PRJ/repos/r/browse"}]}}}
    p = F.parse_payload(json.dumps(server).encode())
    assert p.urls[:2] == ("ssh://git@bb.example:7999/prj/r.git", "https://bb.example/scm/prj/r.git")
    assert p.ref == "refs/heads/main"
    cloud = {"push": {"changes": [{"new": {"name": "main"}}]},
             "repository": {"full_name": "o/r", "links": {"html": {"href": "https://bitbucket.org/o/r"}}}}
    p = F.parse_payload(json.dumps(cloud).encode())
    assert p.urls == ("https://bitbucket.org/o/r",) and p.ref == "main"
    form = urlencode({"payload": json.dumps(github)}).encode()
    assert F.parse_payload(form, "application/x-www-form-urlencoded; charset=utf-8").urls[0] == github[
        "repository"]["clone_url"]


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"null", b"[" * 100_000])
def test_malformed_bodies_are_payload_errors(body: bytes) -> None:
    with pytest.raises(F.PayloadError):
        F.parse_payload(body)
    with pytest.raises(F.PayloadError):
        F.parse_payload(b"payload=1&payload=2", "application/x-www-form-urlencoded")


def test_payload_limits_what_it_takes() -> None:
    doc = {"repository": {"clone_url": "x" * 5000, "html_url": 42, "ssh_url": ["a"], "git_url": "git://h/o/r"}}
    assert F.parse_payload(json.dumps(doc).encode()).urls == ("git://h/o/r",)


def test_one_spelling_per_repository(tmp_path: Path) -> None:
    same = ["https://github.com/Org/Repo.git", "http://github.com/org/repo/", "ssh://git@github.com/org/repo.git",
            "ssh://git@github.com:22/org/repo", "git@github.com:Org/Repo.git", "git://github.com/org/repo",
            "https://user@github.com//org//repo"]
    assert {F.comparable(u) for u in same} == {"github.com/org/repo"}
    assert F.comparable("https://github.com/org/other") == "github.com/org/other"
    assert F.comparable("ftp://github.com/org/repo") is None and F.comparable("") is None
    assert F.comparable("https://github.com/") is None
    repo = tmp_path / "repo"
    repo.mkdir()
    assert F.comparable(str(repo)) == F.comparable(f"file://{repo}") == F.comparable(f"{repo}/") == str(repo.resolve())
    assert F.comparable("repo", tmp_path) == str(repo.resolve())


def test_matching_keys_finds_the_materials_of_a_push(tmp_path: Path) -> None:
    materials = [("git@github.com:org/app.git", "git@github.com:org/app.git"),
                 ("https://github.com/org/lib", "https://github.com/org/lib"),
                 (str(tmp_path / "local"), str(tmp_path / "local"))]
    assert F.matching_keys(materials, ["https://github.com/ORG/app"]) == ["git@github.com:org/app.git"]
    assert F.matching_keys(materials, [f"file://{tmp_path}/local"]) == [str(tmp_path / "local")]
    assert F.matching_keys(materials, ["https://github.com/org/unknown", "not a url at all"]) == []
    assert F.matching_keys(materials, []) == []


def test_the_settings_example_of_docs_webhooks_is_a_valid_workbench_yaml(tmp_path: Path) -> None:
    from workbench.settings import load_settings

    doc = (Path(__file__).resolve().parents[1] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    block = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "workbench.yaml").write_text(block)
    server = load_settings(tmp_path).server
    assert sorted(server.webhook_secrets) == sorted(F.FORGES)
    assert server.webhook_secrets["github"] == "${GITHUB_WEBHOOK_SECRET}" and server.max_body_bytes == 1_000_000
