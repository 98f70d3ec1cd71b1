"""Fan-in resolution over plain data: GoCD's diamond without git or a store."""
from __future__ import annotations

from workbench.materials.fanin import Candidate, describe_conflicts, resolve, shared_keys

CONFIG = "git:/repos/config#master"


def up(pipeline: str, counter: int, config: str, **more: str) -> Candidate:
    return Candidate(f"{pipeline}/{counter}/build/1", {f"pipeline:{pipeline}": str(counter), CONFIG: config, **more})


def test_no_shared_ancestor_takes_the_newest_of_each() -> None:
    result = resolve({"a": [Candidate("a2", {"git:a#m": "a2"}), Candidate("a1", {"git:a#m": "a1"})],
                      "b": [Candidate("b9", {"git:b#m": "b9"})]})
    assert result.ok and {n: c.revision for n, c in result.chosen.items()} == {"a": "a2", "b": "b9"}


def test_diamond_waits_while_upstreams_disagree_on_the_shared_config() -> None:
    # search and api were rebuilt with config c2; ui still only has c1, and qa_deploy already ran with all at c1
    result = resolve({
        "search": [up("search", 2, "c2"), up("search", 1, "c1")],
        "api": [up("api", 2, "c2"), up("api", 1, "c1")],
        "ui": [up("ui", 1, "c1")],
    })
    assert result.ok
    assert {n: c.revision for n, c in result.chosen.items()} == {
        "search": "search/1/build/1", "api": "api/1/build/1", "ui": "ui/1/build/1"}


def test_diamond_triggers_with_matching_revisions_once_all_are_built() -> None:
    result = resolve({
        "search": [up("search", 2, "c2"), up("search", 1, "c1")],
        "api": [up("api", 2, "c2"), up("api", 1, "c1")],
        "ui": [up("ui", 2, "c2"), up("ui", 1, "c1")],
    })
    assert {c.ancestors[CONFIG] for c in result.chosen.values()} == {"c2"}


def test_no_consistent_set_reports_the_conflict_in_words() -> None:
    result = resolve({"search": [up("search", 2, "c2")], "api": [up("api", 5, "c1")]})
    assert not result.ok
    assert result.conflicts == ("config@master: api has c1, search has c2",)


def test_common_upstream_pipeline_must_be_the_same_run() -> None:
    # a -> b, a -> c, (b, c) -> d: b/3 came from a/2, c/7 from a/1, c/6 from a/2
    b = [Candidate("b/3", {"pipeline:b": "3", "pipeline:a": "2"})]
    c = [Candidate("c/7", {"pipeline:c": "7", "pipeline:a": "1"}),
         Candidate("c/6", {"pipeline:c": "6", "pipeline:a": "2"})]
    result = resolve({"b": b, "c": c})
    assert result.chosen["c"].revision == "c/6"


def test_material_without_candidates_cannot_resolve() -> None:
    result = resolve({"a": [], "b": [Candidate("x", {})]})
    assert not result.ok and "a has no revision yet" in result.conflicts[0]


def test_shared_keys_and_step_bound() -> None:
    many = {f"m{i}": [up(f"m{i}", n, f"c{n}") for n in range(20, 0, -1)] for i in range(4)}
    assert shared_keys(many) == {CONFIG}
    assert resolve(many).chosen["m0"].ancestors[CONFIG] == "c20"
    # the last material only has an old config: the search must go back, within its step budget
    many["m3"] = [up("m3", 1, "c1")]
    assert resolve(many).chosen["m0"].ancestors[CONFIG] == "c1"
    assert not resolve(many, max_steps=5).ok


def test_describe_conflicts_short_shas() -> None:
    sha1, sha2 = "a" * 40, "b" * 40
    words = describe_conflicts({"x": Candidate("x", {CONFIG: sha1}), "y": Candidate("y", {CONFIG: sha2})})
    assert words == ("config@master: x has aaaaaaa, y has bbbbbbb",)
