"""Functions as tools: the schema each kind of type hint and docstring gives, and
the model's arguments checked and converted back (no event loop needed)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Optional, TypedDict

import pytest
from pydantic import BaseModel

import asyncchat
from asyncchat.tools import Tool


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Size(TypedDict):
    width: int
    height: int


class Options(TypedDict, total=False):
    verbose: bool


@dataclasses.dataclass
class Point:
    x: float
    y: float = 0.0


class Address(BaseModel):
    street: str
    city: str


class Order(BaseModel):
    deliver_to: Address


def schema_of(annotation: Any, default: Any = ...) -> dict[str, Any]:
    """The schema of one parameter with this annotation."""

    def function(value):  # type: ignore[no-untyped-def]
        pass

    function.__annotations__ = {"value": annotation}
    if default is not ...:
        function.__defaults__ = (default,)
    return Tool(function).parameters["properties"]["value"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("annotation", "schema"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (Sequence[int], {"type": "array", "items": {"type": "integer"}}),
        (
            tuple[int, str],
            {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}},
        ),
        (set[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array"}),
        (dict, {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, "x"], {"enum": [1, "x"]}),
        (Color, {"type": "string", "enum": ["red", "blue"]}),
        (Optional[int], {"anyOf": [{"type": "integer"}, {"type": "null"}]}),  # noqa: UP045
        (int | str, {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
        (Annotated[str, "a city name"], {"type": "string", "description": "a city name"}),
        (Any, {}),
        (
            Size,
            {
                "type": "object",
                "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}},
                "required": ["width", "height"],
            },
        ),
        (
            Options,
            {"type": "object", "properties": {"verbose": {"type": "boolean"}}, "required": []},
        ),
        (
            Point,
            {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x"],
            },
        ),
    ],
    ids=lambda value: getattr(value, "__name__", None) or repr(value)[:30],
)
def test_schema_of_each_kind_of_hint(annotation: Any, schema: dict[str, Any]) -> None:
    assert schema_of(annotation) == schema


def test_a_pydantic_parameter_keeps_its_definitions_at_the_root() -> None:
    def ship(to: Address, back: Address | None = None) -> None:
        pass

    parameters = Tool(ship).parameters
    assert parameters["properties"]["to"]["properties"]["city"] == {
        "title": "City",
        "type": "string",
    }
    assert parameters["required"] == ["to"]

    def order(o: Order) -> None:
        pass

    nested = Tool(order).parameters
    assert nested["properties"]["o"]["properties"]["deliver_to"] == {"$ref": "#/$defs/Address"}
    assert "Address" in nested["$defs"]


def test_defaults_make_a_parameter_optional_and_show_as_json() -> None:
    assert schema_of(Color, Color.BLUE) == {
        "type": "string",
        "enum": ["red", "blue"],
        "default": "blue",
    }
    assert schema_of(int, 3) == {"type": "integer", "default": 3}
    assert schema_of(Any, object()) == {}  # a default with no JSON form is left out


def test_google_docstring() -> None:
    def get_weather(city: str, days: int = 1) -> str:
        """Get the weather forecast.

        Uses the national service.

        Args:
            city: The city, such as
                "Paris".
            days (int): How many days ahead.

        Returns:
            The forecast.
        """
        return ""

    made = Tool(get_weather)
    assert made.name == "get_weather"
    assert made.description == "Get the weather forecast. Uses the national service."
    assert made.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": 'The city, such as "Paris".'},
            "days": {"type": "integer", "description": "How many days ahead.", "default": 1},
        },
        "required": ["city"],
    }


def test_rest_and_numpy_docstrings() -> None:
    def rest(a: int, b: str) -> None:
        """reST style.

        :param a: the first
        :param str b: the second,
            continued
        :returns: nothing
        """

    def numpy(a: int) -> None:
        """NumPy style.

        Parameters
        ----------
        a : int
            The first,
            continued.

        Returns
        -------
        None
        """

    assert Tool(rest).description == "reST style."
    assert Tool(rest).parameters["properties"]["b"]["description"] == "the second, continued"
    assert Tool(numpy).description == "NumPy style."
    assert Tool(numpy).parameters["properties"]["a"] == {
        "type": "integer",
        "description": "The first, continued.",
    }


def test_the_decorator_options_and_the_wire_form() -> None:
    @asyncchat.tool(name="lookup", description="Look it up.", strict=True, timeout=3)
    async def find(query: str, limit: int = 5) -> list[str]:
        """Ignored: the description is given."""
        return [query] * limit

    assert isinstance(find, Tool) and find.timeout == 3 and find.is_async
    assert find.to_dict() == {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look it up.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer", "default": 5},
                },
                "required": ["query", "limit"],  # strict: every property
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    assert find.__name__ == "find" and find.__doc__ == "Ignored: the description is given."

    @asyncchat.tool
    def plain(x: int) -> int:
        return x * 2

    assert plain(4) == 8 and not plain.is_async
    assert "description" not in plain.to_dict()["function"]


def variadic(*args: int) -> None:
    pass


def positional(a: int, /) -> None:
    pass


@pytest.mark.parametrize("function", [variadic, positional, "not a function"])
def test_what_cannot_be_a_tool(function: Any) -> None:
    with pytest.raises(TypeError):
        Tool(function)


def test_bad_names_and_types_are_refused() -> None:
    def f(x: int) -> None:
        pass

    with pytest.raises(ValueError, match="letters, digits"):
        Tool(f, name="has space")

    def g(x: object) -> None:
        pass

    with pytest.raises(TypeError, match="cannot describe"):
        Tool(g)


# --- arguments ------------------------------------------------------------------------------


def everything(
    city: str,
    days: int,
    unit: Literal["c", "f"] = "c",
    color: Color = Color.RED,
    tags: list[str] | None = None,
    size: Size | None = None,
    point: Point | None = None,
    address: Address | None = None,
    ratio: float = 1.0,
    pair: tuple[int, str] | None = None,
) -> None:
    pass


def test_arguments_are_converted_to_the_parameter_types() -> None:
    converted = Tool(everything).arguments(
        '{"city": "Oslo", "days": 2.0, "color": "blue", "tags": ["a"], "size": {"width": 1,'
        ' "height": 2}, "point": {"x": 1}, "address": {"street": "s", "city": "c"},'
        ' "ratio": 2, "pair": [1, "b"]}'
    )
    assert converted == {
        "city": "Oslo",
        "days": 2,
        "color": Color.BLUE,
        "tags": ["a"],
        "size": {"width": 1, "height": 2},
        "point": Point(1.0, 0.0),
        "address": Address(street="s", city="c"),
        "ratio": 2.0,
        "pair": (1, "b"),
    }
    assert type(converted["days"]) is int and type(converted["ratio"]) is float
    assert Tool(everything).arguments('{"city": "x", "days": 1, "tags": null}')["tags"] is None


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ('{"days": 1}', "'city' is missing"),
        ('{"city": 5, "days": 1}', "'city' must be a string, not 5"),
        ('{"city": "x", "days": "2"}', """'days' must be an integer, not "2\""""),
        ('{"city": "x", "days": 1.5}', "'days' must be an integer, not 1.5"),
        ('{"city": "x", "days": true}', "'days' must be an integer, not true"),
        ('{"city": "x", "days": 1, "unit": "k"}', """'unit' must be one of "c", "f", not "k\""""),
        ('{"city": "x", "days": 1, "color": "green"}', "'color' must be one of"),
        ('{"city": "x", "days": 1, "extra": 1}', "there is no parameter 'extra'"),
        ('{"city": "x", "days": 1, "size": {"width": 1}}', "'size' misses field 'height'"),
        ('{"city": "x", "days": 1, "point": {"z": 1}}', "'point' has no field 'z'"),
        ('{"city": "x", "days": 1, "address": {"street": 1}}', "'address' is not a valid Address"),
        ('{"city": "x", "days": 1, "pair": [1]}', "'pair' must be an array of 2 items"),
        ('{"city": "x", "days": 1, "tags": "a"}', "'tags' must be an array"),
        ("[1]", "must be a JSON object"),
        ('{"city": ', "not valid JSON"),
    ],
)
def test_wrong_arguments_are_described_for_the_model(arguments: str, says: str) -> None:
    with pytest.raises(asyncchat.ToolArgumentsError) as caught:
        Tool(everything).arguments(arguments)
    assert says in str(caught.value)
    assert caught.value.arguments == arguments


def test_every_problem_is_named_at_once_and_extra_keywords_are_taken() -> None:
    with pytest.raises(asyncchat.ToolArgumentsError) as caught:
        Tool(everything).arguments('{"city": 1, "unit": "k"}')
    message = str(caught.value)
    assert message.startswith("the arguments do not match everything's parameters: ")
    assert "'city' must be" in message and "'unit' must be" in message
    assert "'days' is missing" in message

    def loose(a: int, **rest: Any) -> None:
        pass

    assert Tool(loose).arguments('{"a": 1, "b": [2]}') == {"a": 1, "b": [2]}


def test_empty_arguments_mean_none_given() -> None:
    def ping() -> str:
        return "pong"

    assert Tool(ping).arguments("") == {}
    assert Tool(ping).arguments("  ") == {}
    assert Tool(ping).arguments(None) == {}
    assert Tool(ping).arguments("null") == Tool(ping).arguments(" null\n") == {}  # Groq
    with pytest.raises(asyncchat.ToolArgumentsError, match="must be a JSON object"):
        Tool(ping).arguments("[]")
    assert Tool(ping).parameters == {"type": "object", "properties": {}, "required": []}


def test_a_custom_tool_is_sent_as_one_and_gets_the_text() -> None:
    @asyncchat.custom_tool
    def run_sql(query: str) -> str:
        """Runs one SQL query on the shop's database.

        Args:
            query: The query, in SQLite's dialect.
        """
        return query

    assert isinstance(run_sql, asyncchat.CustomTool) and isinstance(run_sql, Tool)
    assert run_sql.to_dict() == {
        "type": "custom",
        "custom": {"name": "run_sql", "description": "Runs one SQL query on the shop's database."},
    }
    text = 'SELECT * FROM t WHERE a = "{"'  # not JSON, and need not be
    assert run_sql.arguments(text) == {"query": text}
    assert run_sql.arguments(None) == {"query": ""}
    assert run_sql("x") == "x" and repr(run_sql) == "CustomTool('run_sql')"


def test_a_custom_tool_with_a_grammar_and_options() -> None:
    @asyncchat.custom_tool(
        name="calc", description="Adds numbers.", grammar=r"\d+(\+\d+)*", syntax="regex", timeout=3
    )
    async def add(expression: Annotated[str, "like 1+2"]) -> int:
        return sum(map(int, expression.split("+")))

    assert add.to_dict() == {
        "type": "custom",
        "custom": {
            "name": "calc",
            "description": "Adds numbers.",
            "format": {
                "type": "grammar",
                "grammar": {"definition": r"\d+(\+\d+)*", "syntax": "regex"},
            },
        },
    }
    assert add.is_async and add.timeout == 3 and add.input_name == "expression"
    assert add.arguments("1+2") == {"expression": "1+2"}


def test_a_custom_tool_refuses_what_cannot_take_one_text() -> None:
    def two(a: str, b: str) -> None: ...
    def number(a: int) -> None: ...
    def nothing() -> None: ...

    for function, signature in [(two, "(a: str, b: str)"), (number, "(a: int)"), (nothing, "()")]:
        with pytest.raises(TypeError, match="one str parameter") as caught:
            asyncchat.custom_tool(function)
        assert f"{function.__name__}{signature} -> None" in str(caught.value)
    with pytest.raises(ValueError, match="'lark' or 'regex', not 'ebnf'"):
        asyncchat.custom_tool(grammar="start: x", syntax="ebnf")(lambda text: text)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty text"):
        asyncchat.custom_tool(grammar="  ")(lambda text: text)
    with pytest.raises(ValueError, match="1 to 64 letters"):
        asyncchat.custom_tool(name="no spaces")(lambda text: text)
