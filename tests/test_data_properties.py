"""Property-based tests: any malformed Karpathy file gives DataValidationError, never a deep traceback."""
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cookie_lib.data import DataValidationError, text_matching_set, validate_karpathy

from conftest import EMOJI_DIR as FIXTURE

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
FIELDS = ["split", "filepath", "filename", "imgid", "sentences", "sentids", "concept", "design", "group",
          "subgroup", "cocoid"]
SENTENCE_FIELDS = ["raw", "tokens", "sentid", "imgid", "kind", "templated"]


def _base():
    return json.loads((FIXTURE / "dataset_emoji.json").read_text())


def _check(tmp_path: Path, data) -> None:
    """Validation either passes (and the loaded corpus is usable) or raises DataValidationError."""
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(data))
    try:
        corpus = validate_karpathy(path, FIXTURE / "images")
    except DataValidationError as err:
        assert str(path) in str(err)
        return
    corpus.counts()  # what training and evaluation use next must work on whatever passed validation
    records = corpus.split("train")
    {(r.key, r.subgroup, r.group) for r in records}
    try:
        text_matching_set(records, "cldr_label", "cldr_keywords")
    except ValueError as err:  # a kind missing everywhere is reported, by name
        assert "kind" in str(err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 113), field=st.sampled_from(FIELDS), value=json_values, drop=st.booleans())
def test_a_corrupted_image_record_gives_a_clear_error(tmp_path, index, field, value, drop):
    data = _base()
    record = data["images"][index]
    if drop:
        record.pop(field, None)
    else:
        record[field] = value
    _check(tmp_path, data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(index=st.integers(0, 113), field=st.sampled_from(SENTENCE_FIELDS), value=json_values,
       whole=json_values, replace_whole=st.booleans())
def test_a_corrupted_sentence_gives_a_clear_error(tmp_path, index, field, value, whole, replace_whole):
    data = _base()
    sentences = data["images"][index]["sentences"]
    if replace_whole:
        sentences[0] = whole
    else:
        sentences[0][field] = value
    _check(tmp_path, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top=json_values)
def test_any_top_level_json_gives_a_clear_error(tmp_path, top):
    _check(tmp_path, top)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(1, 2000))
def test_truncated_json_names_line_and_column(tmp_path, cut):
    text = (FIXTURE / "dataset_emoji.json").read_text()[:cut]
    path = tmp_path / "dataset.json"
    path.write_text(text)
    try:
        validate_karpathy(path, FIXTURE / "images", check_images=False)
    except DataValidationError as err:
        assert "line" in str(err) and str(path) in str(err)
    else:
        raise AssertionError("truncated JSON was accepted")
