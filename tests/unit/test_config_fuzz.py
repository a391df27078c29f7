"""Property-based: whatever a config file holds, `Config.load` returns a valid config or raises ConfigError,
never any other exception (a traceback for the user)."""
import copy
import dataclasses
import typing

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omnigpt import Config, ConfigError
from omnigpt.cli import _config_path

SECTIONS = {f.name: typing.get_args(t)[0] if typing.get_origin(t) is typing.Union else t
            for f in dataclasses.fields(Config) for t in [typing.get_type_hints(Config)[f.name]]}

INTS = st.one_of(st.integers(min_value=-4, max_value=600), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                 st.sampled_from([0, 1, -1, 2, 3, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 63, -2 ** 63 - 1]))
NUMBERS = st.one_of(INTS, st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, 1.0, -1.0]))
SCALARS = st.one_of(NUMBERS, st.booleans(), st.none(), st.text(max_size=12),
                    st.sampled_from(["nan", ".inf", "-1e999", "3e-4", "builtin", "auto", "{text}", ""]))
ANYTHING = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                        max_leaves=8)


def _mostly(own: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    """`own` nine times in ten: a value of the right type more often reaches the checks past the type check."""
    return st.integers(0, 9).flatmap(lambda k: other if k == 0 else own)


def _typed(tp: typing.Any) -> st.SearchStrategy:
    """Values of a field's own type (so that generation gets past the type check to validation), or anything."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _section(tp)
    if origin is typing.Union:
        return st.one_of(st.none(), *(_typed(a) for a in args if a is not type(None)))
    if origin is typing.Literal:
        own = st.sampled_from(args)
    elif origin is list:
        own = st.lists(_typed(args[0]), max_size=5)
    elif origin is dict:
        keys = st.one_of(st.sampled_from(typing.get_args(args[0]) or ["key"]), st.text(max_size=6), INTS)
        own = st.dictionaries(keys, _typed(args[1]), max_size=3)
    elif tp is float:
        own = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 2.0), NUMBERS)
    elif tp is int:
        own = INTS
    elif tp is bool:
        own = st.booleans()
    else:
        own = st.text(max_size=12)
    return _mostly(own, ANYTHING)


def _section(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _typed(hints[f.name]) for f in dataclasses.fields(cls)}
    known = st.fixed_dictionaries({}, optional=fields)
    return _mostly(known, st.one_of(st.dictionaries(st.sampled_from([*fields, "typo"]), ANYTHING, max_size=3),
                                    ANYTHING))


SHIPPED = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(_config_path("text-tiny").parent.glob("*.yaml"))}


@st.composite
def _shipped_with_changes(draw: st.DrawFn) -> dict:
    """A shipped config (valid) with one to three keys given arbitrary values: reaches the deeper checks."""
    data = copy.deepcopy(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(SECTIONS)))
        cls = SECTIONS[name]
        hints = typing.get_type_hints(cls)
        key = draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
        section = data.setdefault(name, {})
        if isinstance(section, dict):
            section[key] = draw(_typed(hints[key]))
    return data


SECTIONED = st.fixed_dictionaries({}, optional={name: _section(cls) for name, cls in SECTIONS.items()})
CONFIGS = _mostly(st.one_of(_shipped_with_changes(), SECTIONED), ANYTHING)


def _load_or_config_error(path) -> None:
    try:
        cfg = Config.load(path)
    except ConfigError as exc:
        assert str(exc)
        return
    assert cfg.validate() is cfg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=CONFIGS)
def test_any_config_loads_or_raises_config_error(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _load_or_config_error(path)


YAML_PIECES = st.lists(st.sampled_from([
    "model:", "train:", "vision:", "\n", "  ", "lr:", "n_embd:", "rope_scaling:", "position: rope", "!!float", "!!int",
    "!!binary", "!!timestamp", "!!set", "!!python/object:os.system", "&a", "*a", "<<:", "? ", "[", "]", "{", "}",
    ",", "'x'", '"\\x"', ".nan", "-.inf", "1e9999", "0x1f", "1_000", "2001-12-14", "~", "yes", "- ", "#",
    "---\n", "|\n", "\t", "\x00", "\ufeff", "\u00e9"]), max_size=30).map(lambda parts: "".join(parts).encode())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(st.binary(max_size=80), YAML_PIECES, st.text(max_size=80).map(str.encode)))
def test_any_bytes_load_or_raise_config_error(tmp_path, content):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    _load_or_config_error(path)
