"""What OpenAI-compatible servers do differently, and the one rule asyncchat follows
for each. A new quirk goes here (and in a test), not into the modules that use it.

    quirk                                     who                      rule
    ----------------------------------------  -----------------------  -----------------------
    reasoning as `reasoning_content`          DeepSeek, GLM, Qwen      accumulated like content
    reasoning as `reasoning`                  vLLM, OpenRouter, Ollama   (REASONING_KEYS), kept
    reasoning under both names at once        StepFun                    under the first name
    content as a list of `text` and           Mistral                  text parts are content,
      `thinking` parts                                                   thinking is reasoning
                                                                         (content_parts)
    `reasoning_details` in pieces             OpenRouter               joined by `index`, sent
                                                                       back as they came
    an error body as a list of one error      Gemini                   read as that one error
    `{"error": {...}}` in a 2xx body/event    OpenRouter, GLM, proxies an APIStatusError
    `{"object": "error", "message": ...}`     vLLM, SGLang               (is_error_body)
    `event: error`, JSON or text              some gateways            the same, in streams
    tool-call fragments without `index`       Gemini, older Ollama     routed by id, then a new
                                                                       name, then the latest call
    every parallel call at `index` 0          Ollama, proxies from     a new id and name after
                                              other APIs                 whole arguments start a
                                                                         call of its own
      ... the later ones with no id or name   a proxy of Gemini 3      so do arguments that open
                                                                         a new object after whole
                                                                         ones, or another name
    id / type in every fragment               some vLLM builds         assigned, never appended
    a call's name in every fragment, or in    some vLLM builds,        kept once; a piece that
      pieces                                  MiniMax on NIM; Gemini     does not restate it
                                              at times                   extends it (name_piece)
    a later fragment named `"null"`           LiteLLM                  no name
    the whole tool call in one chunk          GLM, Ollama, vLLM        one fragment like others
    a call's arguments sent again: all so     Baidu Qianfan; vLLM's    only what is new added,
      far in each piece, or whole at the end  GLM and xLAM parsers       or they replace what
                                                                         came (arguments_piece)
    tool arguments as a JSON object           Ollama, proxies          serialized to JSON text
    a call without arguments as `""` or       Ollama, vLLM; Groq,      no arguments, `{}`
      `"null"`                                  Cohere                   (says_no_arguments)
    a call's own fields (`extra_content`:     Gemini                   kept with the call, and
      its thought signature)                                             sent back with it
    usage in a last `choices: []` chunk,      OpenAI, vLLM             the last non-null usage
      in every chunk, in the finishing        Moonshot                   wins, never summed
      choice, or in the finishing chunk's     Groq                       (usage_beside_finish)
      `x_groq`
    a first chunk with `choices: []`          Azure (filter results)   skipped
    chunks with an empty `id` and `model`     Azure (filter            an empty value never
      between and after the answer's            annotations)             replaces a known one
    no `[DONE]`, or `[DONE]` twice            Ollama, llama.cpp        done when every choice
                                                                       has a finish_reason
    `finish_reason: "stop"` on chunks         OpenWebUI, gcli2api      the answer goes on being
      mid-answer                                                         read; a call is done once
                                                                         its arguments are whole
    finish_reason `sensitive`, ...            GLM                      an open string; parse()
                                                                       reads `sensitive` as a
                                                                       content filter
                                                                       (CONTENT_FILTER_REASONS)
    finish_reason `model_context_window_      z.ai GLM                 cut, as at the token
      exceeded`                                                          limit (LIMIT_REASONS)
    a 200 answer the server gave up on,       DeepSeek under load,     not whole: parse()
      saying so only in `finish_reason`:      GLM on an inference        raises, run_tools runs
      `insufficient_system_resource`,           error, vLLM when its     no half call, the CLI
      `network_error`, `abort`                  engine stops             and batch say so
                                                                         (SERVER_STOP_REASONS,
                                                                         cut_short_at)
    `json_schema` response_format refused     DeepSeek, GLM            parse(strategy=
                                                                       "json_object")
    JSON answer in a code fence, or after     Gemini at times,         the JSON inside is parsed
      a `<think>` block; a remark after the   MiniMax; R1 and Qwen3      to its value's end
      fence                                   without a reasoning        (answer_json_start,
                                              parser                     answer_json_text)
    only `tool_choice: "auto"` taken          GLM                      no "tool" strategy there
    SSE labelled `application/json`           hand-written servers     read as SSE
    503 "Loading model" while it loads        llama.cpp                a batch job waits for
                                                                       it (says_loading_model)
    a 429's rate-limit headers in its body    OpenRouter               read as headers; a spent
      (`error.metadata.headers`), the reset                              budget's reset is the
      a Unix time in milliseconds                                        pause asked for
                                                                         (rate_limit_headers_in_
                                                                         body)
    a 429's pause in its body, as a           Gemini                   the pause asked for
      `google.rpc.RetryInfo` detail's                                    (retry_delay_in_body)
      `retryDelay`, and no `Retry-After`
    a 400, not a 404, for a model the         Mistral, Perplexity      as a 404: a batch job
      server does not have: type              (`invalid_model`),         stops there
      `invalid_model`, code                   Groq, Zhipu, DeepSeek      (says_unknown_model)
      `model_decommissioned` or `1211`, or
      "Model Not Exist"
    a 400, not a 401, for a wrong API key:    Gemini, xAI              as a 401: a batch job
      a `google.rpc.ErrorInfo` reason                                    stops there
      `API_KEY_INVALID`, or "Incorrect API                               (says_key_invalid)
      key provided"
    rate-limit headers that name their        Cerebras, Mistral        every window read; the
      window (`-requests-day`, `-tokens-      (`req`), Nous              one with the fewest left
      minute`, `-req-10-second`, `-tokens-                               speaks for its kind, and
      1h`), several at once                                              any spent one pauses
                                                                         starts (ratelimits.
                                                                         read_budgets)
    a 498, its own status, for its flex tier  Groq                     retried as a 503
      at capacity (`capacity_exceeded`)                                  (_retry.RETRYABLE_
                                                                         STATUSES)
    a 429 saying a day's budget is spent,     Cerebras                 its reset is the pause
      and no `Retry-After`                                               asked for, if past 10
                                                                         minutes (_retry.
                                                                         pause_in_headers)
      ... or a month's, with no reset named   Mistral                    an endless pause: not
                                                                         retried, a batch job
                                                                         stops
    a 429 for a quota spent for the day,      Gemini                   an endless pause: not
      its `RetryInfo` asking for seconds all                             retried, a batch job
      the same (`QuotaFailure` quotaId                                   stops (says_quota_
      `...PerDay...`)                                                    spent_for_long)
    a 429 whose code says a budget of hours   Zhipu                    an endless pause: not
      or more is spent: `1304` (the day's                                retried, a batch job
      calls), `1308` (five hours), `1310` (a                             stops (says_quota_
      week or a month)                                                   spent_for_long)
      ... or in words: "limited to 1000 API   Cohere (a trial key)
      calls / month"
    a 429 for a budget of nothing (a model    OpenAI, Gemini           an endless pause: not
      the tier may not use): "Limit 0, Used                              retried, a batch job
      0, Requested 1", a `QuotaFailure`                                  stops (says_limit_is_
      `quotaValue` of "0"                                                zero)
    a 429's pause in its message's words      OpenAI, Groq, Azure;     the pause asked for
      alone: "Please try again in 11.054s",   Gemini through a proxy     (retry_delay_in_
      "Please retry after 8 seconds"          that drops its details     message)
    a 429 for one request over the whole      OpenAI, Groq             not retried, the pace not
      budget: "Request too large", or                                    slowed; a batch job goes
      "Limit 18000, ... Requested ~36313"                                on (says_request_too_
                                                                         large)
    a 429, not a 402, for an account out of   OpenAI                   as a 402: not retried,
      money: code `insufficient_quota`,       (`insufficient_quota`),    and a batch job stops
      `1113` or `1309`, type `exceeded_       Zhipu (`1113`: no          (says_out_of_credits)
      current_quota_error`, or "used all      balance; `1309`: a plan
      available credits" (a 403 on xAI's      expired), Moonshot, xAI
      Responses API)
      ... a 400 `Arrearage`, a 403            Alibaba (Qwen), Volcengine
      `AccountOverdueError`, or "account      Ark (Doubao), SiliconFlow
      balance is insufficient"
    a 403 for an input a model's moderation   OpenRouter               that request's failure,
      flagged (`error.metadata.reasons`,                                 not a job-wide one
      `flagged_input`)                                                   (says_input_flagged)
    a value of the wrong JSON type            any                      skipped as if absent

The SSE rules (line ends, comments, a BOM) live in `sse.py`, the stream's labels in
`_stream.py`, the rate-limit headers' names in `ratelimits.py`; the rules below are the
ones the chunk readers share.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from asyncchat.partial_json import PartialJSONError, PartialJSONParser

__all__ = [
    "CONTENT_FILTER_REASONS",
    "LIMIT_REASONS",
    "REASONING_KEYS",
    "SERVER_STOP_REASONS",
    "answer_json_start",
    "answer_json_text",
    "arguments_piece",
    "content_parts",
    "content_text",
    "could_restate_arguments",
    "cut_short_at",
    "idless_fragment_starts_a_call",
    "is_error_body",
    "message_reasoning",
    "name_piece",
    "names_a_function",
    "rate_limit_headers_in_body",
    "reasoning_text",
    "retry_delay_in_body",
    "retry_delay_in_message",
    "reused_index_starts_a_call",
    "says_input_flagged",
    "says_key_invalid",
    "says_limit_is_zero",
    "says_loading_model",
    "says_no_arguments",
    "says_out_of_credits",
    "says_quota_spent_for_long",
    "says_request_too_large",
    "says_unknown_model",
    "unindexed_fragment_starts_a_call",
    "usage_beside_finish",
]

REASONING_KEYS = ("reasoning_content", "reasoning")
# finish_reason values that mean a provider's filter stopped the answer.
CONTENT_FILTER_REASONS = frozenset({"content_filter", "sensitive"})
# finish_reason values that mean the answer reached a limit before the model ended it:
# the token limit, or the context window (z.ai's GLM).
LIMIT_REASONS = frozenset({"length", "model_context_window_exceeded"})
# finish_reason values that mean the server gave up mid-answer and said so in a 200
# answer: DeepSeek under load, GLM on an inference error, vLLM when its engine shuts
# down or scales in.
SERVER_STOP_REASONS = frozenset({"insufficient_system_resource", "network_error", "abort"})


def cut_short_at(finish_reason: Any) -> str | None:
    """Where an answer that ended with this `finish_reason` was cut before the model
    ended it, in words for a message ("at the token limit"); None for an answer the
    model ended, or a filter stopped. A cut answer is not whole: JSON in it does not
    parse, and its last tool call may be half written."""
    if type(finish_reason) is not str:
        return None
    if finish_reason == "length":
        return "at the token limit"
    if finish_reason == "model_context_window_exceeded":
        return "where the conversation filled the model's context window"
    if finish_reason in SERVER_STOP_REASONS:
        return "when the server stopped it"
    return None


def reasoning_text(message: dict[str, Any]) -> str | None:
    """The reasoning text of a delta or message, under whichever key the server used."""
    for key in REASONING_KEYS:
        value = message.get(key)
        if value and type(value) is str:
            return value
    return None


def content_parts(parts: list[Any]) -> tuple[list[str], list[str]]:
    """The answer's text and the model's thinking in a content sent as a list of parts,
    as Mistral sends it: `{"type": "text", "text": ...}` parts are the answer,
    `{"type": "thinking", "thinking": [{"type": "text", "text": ...}]}` parts the
    thinking (its reasoning models'). Other parts hold neither."""
    text: list[str] = []
    thinking: list[str] = []
    for part in parts:
        if type(part) is not dict:
            continue
        kind = part.get("type")
        if kind == "text":
            value = part.get("text")
            if type(value) is str:
                text.append(value)
        elif kind == "thinking":
            inner = part.get("thinking")
            if type(inner) is str:
                thinking.append(inner)
            elif type(inner) is list:
                thinking += content_parts(inner)[0]
    return text, thinking


def content_text(content: Any) -> str | None:
    """The answer's text of a message's content, a string or a list of parts."""
    if type(content) is list:
        text = content_parts(content)[0]
        return "".join(text) if text else None
    return content if type(content) is str else None


def message_reasoning(message: dict[str, Any]) -> str | None:
    """The reasoning of a message or delta: under a reasoning key, or as the thinking
    parts of its content (Mistral)."""
    text = reasoning_text(message)
    content = message.get("content")
    if text is None and type(content) is list:
        thinking = content_parts(content)[1]
        text = "".join(thinking) if thinking else None
    return text


_FIRST_KEY = re.compile(r'\s*\{\s*"((?:[^"\\]|\\.)*)"')


def arguments_piece(so_far: str, piece: str) -> str | None:
    """What a tool call's arguments piece that opens an object adds to the arguments
    `so_far`. Usually itself, a nested object; but some servers send the arguments
    again, where appending would make `{...}{...}`: all of them so far in every piece
    (Baidu Qianfan), or whole once more at the end of the stream (vLLM's GLM and xLAM
    tool parsers). A piece that starts with everything so far adds what follows it.
    A whole object with the same first key, which cannot follow what came (vLLM
    re-serializes it, after pieces that may lack the closing brace), is None: it
    replaces the arguments so far."""
    if piece.startswith(so_far):
        return piece[len(so_far) :]
    return None if _restates(so_far, piece) else piece


def name_piece(so_far: str | None, piece: str) -> str:
    """A tool call's name after a fragment that carries `piece` of it. Most servers
    send the name once; some send it whole in every fragment (some vLLM builds,
    MiniMax behind NVIDIA NIM), or all of it so far; others cut it as they cut the
    arguments (Gemini at times: `get_wea`, then `ther`), which extends it. Some
    LiteLLM versions name every later fragment `"null"`, a JSON null written as
    text: that is no name."""
    if not so_far or piece.startswith(so_far):
        return piece
    if piece == "null":
        return so_far
    return so_far + piece


def could_restate_arguments(start: str, piece: str) -> bool:
    """Whether an arguments piece that opens an object is worth `arguments_piece`'s
    look, given any `start` of the arguments so far: it starts as they do, or opens
    with a key. A `{` in a string (code in the arguments) is neither, and costs no
    joining of the arguments to find so."""
    return piece.startswith(start) or _FIRST_KEY.match(piece) is not None


def _first_key(text: str) -> str | None:
    match = _FIRST_KEY.match(text)
    return None if match is None else match[1]


def _restates(so_far: str, piece: str) -> bool:
    if _first_key(so_far) != _first_key(piece):
        return False  # the usual case, a nested object: told without parsing anything
    try:
        whole = orjson.loads(piece)
    except orjson.JSONDecodeError:
        return False
    if type(whole) is not dict:
        return False
    try:
        PartialJSONParser().feed(so_far + piece)
    except PartialJSONError:
        return True
    return False


_WRAPPERS = ("<think>", "```")


def answer_json_start(text: str) -> tuple[int, bool] | None:
    """Where the JSON starts in an answer asked for as JSON (`text`, whole or so far),
    and whether a code fence holds it; None while the text does not show it yet.

    A model that ignores the format, or predates it, wraps the JSON: in a Markdown
    code fence (Gemini at times, MiniMax, local servers that do not enforce
    `json_schema`), after its thinking in `<think>...</think>` (DeepSeek-R1 and Qwen3
    served without a reasoning parser).
    """
    position = _past_space(text, 0)
    if text.startswith("<think>", position):
        end = text.find("</think>", position)
        if end < 0:
            return None
        position = _past_space(text, end + len("</think>"))
    rest = text[position : position + 7]
    if any(wrapper.startswith(rest) for wrapper in _WRAPPERS):
        return None  # nothing yet, or a wrapper's first characters
    if rest.startswith("```"):
        line_end = text.find("\n", position)
        return None if line_end < 0 else (line_end + 1, True)
    return position, False


def answer_json_text(text: str) -> str:
    """The JSON of a whole answer asked for as JSON: past a `<think>` block, inside a
    code fence (`answer_json_start`); the text itself when neither wraps it.

    In a fence, the JSON ends where its value ends, as the stream reads it: what
    follows is the fence's end, and at times a remark after it."""
    start = answer_json_start(text)
    if start is None:
        return text
    position, fenced = start
    body = text[position:]
    if fenced:
        parser = PartialJSONParser()
        try:
            parser.feed(body)
        except PartialJSONError as error:
            if parser.done:  # the value is whole; the error is at what follows it
                return body[: error.position]
        body = body.rstrip()
        body = body[:-3] if body.endswith("```") else body
    return body


def _past_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def usage_beside_finish(chunk: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any] | None:
    """The usage a server sends with a choice's finish rather than in the chunk's
    `usage`: Moonshot inside the finishing choice, Groq in the finishing chunk's
    `x_groq` (unasked; asked with `stream_options`, it sends a `usage` chunk too)."""
    usage = choice.get("usage")
    if type(usage) is dict:
        return usage
    groq = chunk.get("x_groq")
    if type(groq) is dict and type(usage := groq.get("usage")) is dict:
        return usage
    return None


def says_no_arguments(text: str | None) -> bool:
    """Whether a tool call's arguments text means none: blank, as Ollama and vLLM send
    it for a function without parameters, or JSON `null`, as Groq (and Cohere at
    times) send it. Arguments are an object, so `null` can mean nothing else."""
    return text is None or not text.strip() or text.strip() == "null"


def is_error_body(data: dict[str, Any]) -> bool:
    """Whether a JSON object that came with a 2xx status (a body, or a stream event)
    is really an error report."""
    return bool(data.get("error")) or ("choices" not in data and data.get("object") == "error")


def _error_object(body: Any) -> dict[str, Any] | None:
    """The `error` object of an error body, or of its one item when the body is a
    list (Gemini's OpenAI-compatible endpoint)."""
    if type(body) is list and len(body) == 1:
        body = body[0]
    error = body.get("error") if type(body) is dict else None
    return error if type(error) is dict else None


# Error codes that say the server has no such model: Groq's for one it retired,
# Zhipu's (GLM) "Unknown Model, please check the model code" (`1211`).
_UNKNOWN_MODEL_CODES = frozenset({"model_decommissioned", "1211"})
# Error codes (or types) that say the account has no money to spend: OpenAI's;
# Zhipu's for no balance or resource package left (`1113`) and for a coding plan
# expired (`1309`); Alibaba's (Qwen) 400 `Arrearage`; Volcengine Ark's (Doubao) 403
# `AccountOverdueError`; Moonshot's (Kimi) 429 of type `exceeded_current_quota_error`.
_OUT_OF_CREDITS_CODES = frozenset(
    {
        "insufficient_quota",
        "1113",
        "1309",
        "Arrearage",
        "AccountOverdueError",
        "exceeded_current_quota_error",
    }
)
# ... or words: xAI's, and SiliconFlow's (its code, 30001, is a bare number).
_OUT_OF_CREDITS_WORDS = ("used all available credits", "account balance is insufficient")
# Zhipu's 429 codes for a budget spent for hours or more: the day's calls (`1304`),
# the coding plan's five hours (`1308`), its week or month (`1310`).
_SPENT_FOR_LONG_CODES = frozenset({"1304", "1308", "1310"})
# Cohere's trial key: "limited to 1000 API calls / month" (per minute: a short wait).
_CALLS_PER_LONG_WINDOW = re.compile(r"limited to \d+ API calls / (?:day|week|month)")


def says_unknown_model(code: Any, error_type: Any, message: Any) -> bool:
    """Whether an error (its `code`, `type` and `message`) says the server has no such
    model, for the servers that answer so with a 400, not a 404: Mistral and
    Perplexity by the type `invalid_model`, Groq and Zhipu by their codes
    (`model_decommissioned` for a model Groq retired, `1211`), DeepSeek by its
    message "Model Not Exist" alone."""
    if error_type == "invalid_model" or code in _UNKNOWN_MODEL_CODES:
        return True
    return type(message) is str and message.strip().lower() == "model not exist"


def says_out_of_credits(code: Any, error_type: Any, message: Any) -> bool:
    """Whether an error (its `code`, `type` and `message`) says the account has no
    money left to spend, which no wait mends, whatever its status: OpenAI's 429 with
    the code `insufficient_quota`, Zhipu's with `1113` or `1309`, Moonshot's of type
    `exceeded_current_quota_error`, Alibaba's 400 and Volcengine's 403 (`Arrearage`,
    `AccountOverdueError`), xAI's 429 (403 on its Responses API) saying the team
    "has either used all available credits or reached its monthly spending limit",
    SiliconFlow's 403 saying "your account balance is insufficient". A 402 says so by
    its status (DeepSeek, OpenRouter)."""
    if code in _OUT_OF_CREDITS_CODES or error_type in _OUT_OF_CREDITS_CODES:
        return True
    return type(message) is str and any(words in message for words in _OUT_OF_CREDITS_WORDS)


def says_input_flagged(body: Any) -> bool:
    """Whether an error's body says a moderation filter flagged this request's input,
    as OpenRouter's 403 does (`error.metadata` with the `reasons` and the
    `flagged_input`): one request's refusal, where a 403 otherwise says the key may
    not use the model."""
    error = _error_object(body)
    metadata = error.get("metadata") if error is not None else None
    return type(metadata) is dict and ("flagged_input" in metadata or "reasons" in metadata)


def rate_limit_headers_in_body(body: Any) -> dict[str, str] | None:
    """The rate-limit headers an error's body carries, as text: OpenRouter sends a
    429's (`X-RateLimit-Limit`, `-Remaining`, `-Reset` in Unix milliseconds) in
    `error.metadata.headers`, not among the response's headers."""
    error = _error_object(body)
    metadata = error.get("metadata") if error is not None else None
    headers = metadata.get("headers") if type(metadata) is dict else None
    if type(headers) is not dict:
        return None
    found = {
        str(name): str(value) for name, value in headers.items() if type(value) in (str, int, float)
    }
    return found or None


def retry_delay_in_body(body: Any) -> str | None:
    """The pause a 429's body asks for in Google's terms (`"53s"`, `"38.601s"`):
    Gemini, its OpenAI-compatible endpoint too, sends no `Retry-After` but an
    `error.details` item of type `google.rpc.RetryInfo` with a `retryDelay`."""
    detail = _google_detail(body, "google.rpc.RetryInfo")
    delay = detail.get("retryDelay") if detail is not None else None
    return delay if type(delay) is str else None


# "Please try again in 11.054s." (OpenAI; Groq in a Go duration, `1m2.64s`), "Please
# retry in 27.6s." (Gemini), "Please retry after 7 seconds." (Azure).
_PAUSE_IN_MESSAGE = re.compile(
    r"(?:[Tt]ry again|[Rr]etry) (?:in|after) "
    r"((?:\d+(?:\.\d+)?(?:ms|h|m|s))+(?![A-Za-z])|\d+(?:\.\d+)?(?= seconds?\b))"
)
# "Limit 30000, Requested 61227" (OpenAI), "Limit 18000, Used 0, Requested ~36313" (Groq)
_LIMIT_AND_REQUESTED = re.compile(r"Limit (\d+), (?:Used \d+, )?Requested ~?(\d+)")


def retry_delay_in_message(message: Any) -> str | None:
    """The pause a 429's message asks for in words, as a duration (`"11.054s"`,
    `"201ms"`, `"1m2.64s"`, `"7"` for seconds): OpenAI's "Please try again in
    11.054s." comes with no `Retry-After`, and so may Groq's, Gemini's "Please retry
    in 27.6s." through a proxy that dropped its `RetryInfo`, and Azure's "Please
    retry after 7 seconds."."""
    if type(message) is not str:
        return None
    match = _PAUSE_IN_MESSAGE.search(message)
    return match[1] if match is not None else None


def says_request_too_large(message: Any) -> bool:
    """Whether a 429's message says this request alone asks for more than the budget
    holds, which no wait mends: OpenAI's and Groq's "Request too large for ... on
    tokens per min (TPM): Limit 30000, Requested 61227. The input or output tokens
    must be reduced", or Groq's "Rate limit reached ... Limit 18000, Used 0,
    Requested ~36313. Please try again in 1m1s." (with a `Retry-After` all the same).
    The request's own failure: smaller ones still fit."""
    if type(message) is not str:
        return False
    if "Request too large" in message:
        return True
    match = _LIMIT_AND_REQUESTED.search(message)  # a limit of 0 lets no request through
    return match is not None and 0 < int(match[1]) < int(match[2])


def says_quota_spent_for_long(code: Any, message: Any, body: Any) -> bool:
    """Whether a 429 (its error's `code` and `message`, its `body`) says a quota is
    spent that no wait a client makes mends: Gemini's `google.rpc.QuotaFailure` naming
    a quota per day (a `quotaId` such as
    `GenerateRequestsPerDayPerProjectPerModel-FreeTier`), whose `RetryInfo` asks for
    seconds all the same; Zhipu's codes for the day's calls spent (`1304`), or its
    coding plan's five hours, week or month (`1308`, `1310`, their messages naming
    the reset in China's time); Cohere's trial key "limited to 1000 API calls /
    month"."""
    if code in _SPENT_FOR_LONG_CODES:
        return True
    if type(message) is str and _CALLS_PER_LONG_WINDOW.search(message):
        return True
    return any(
        type(quota_id := violation.get("quotaId")) is str and "PerDay" in quota_id
        for violation in _quota_violations(body)
    )


def says_limit_is_zero(message: Any, body: Any) -> bool:
    """Whether a 429 says the budget itself is nothing, so that no request is ever let
    through: OpenAI's "Limit 0, Used 0, Requested 1" (a model the account's tier may
    not use), Gemini's `QuotaFailure` with a `quotaValue` of "0" (a model without a
    free tier)."""
    if type(message) is str:
        match = _LIMIT_AND_REQUESTED.search(message)
        if match is not None and match[1] == "0":
            return True
    return any(violation.get("quotaValue") == "0" for violation in _quota_violations(body))


def _quota_violations(body: Any) -> list[dict[str, Any]]:
    """The `violations` of a Google error's `google.rpc.QuotaFailure` detail."""
    detail = _google_detail(body, "google.rpc.QuotaFailure")
    violations = detail.get("violations") if detail is not None else None
    if type(violations) is not list:
        return []
    return [violation for violation in violations if type(violation) is dict]


def says_key_invalid(message: Any, body: Any) -> bool:
    """Whether an error (the server's `message`, its `body`) says the API key is not
    valid, where its status does not: Gemini and xAI answer a wrong key with a 400,
    Gemini's giving the reason `API_KEY_INVALID` in a `google.rpc.ErrorInfo` detail,
    xAI's saying "Incorrect API key provided" (as OpenAI's 401 does)."""
    if type(message) is str and message.startswith("Incorrect API key provided"):
        return True
    detail = _google_detail(body, "google.rpc.ErrorInfo")
    return detail is not None and detail.get("reason") == "API_KEY_INVALID"


def _google_detail(body: Any, kind: str) -> dict[str, Any] | None:
    """The first `error.details` item of this type (`google.rpc.RetryInfo`, ...), in
    the error bodies of Google's APIs."""
    error = _error_object(body)
    details = error.get("details") if error is not None else None
    for detail in details if type(details) is list else ():
        if type(detail) is not dict:
            continue
        named = detail.get("@type")
        if type(named) is str and named.endswith(kind):
            found: dict[str, Any] = detail
            return found
    return None


def says_loading_model(status: int, body: Any) -> bool:
    """Whether an error answer says the server is up but still loading its model
    (llama.cpp's 503 "Loading model"): the request was not run, and the server
    will serve once loaded."""
    error = body.get("error") if status == 503 and isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and message.strip().lower() == "loading model"


def reused_index_starts_a_call(name: Any, arguments_so_far: str) -> bool:
    """A tool-call fragment at an `index` a call already holds, with an id other than
    that call's: another call (Ollama numbers every parallel call 0, as do proxies
    that translate other APIs), or more of the same call under an unsteady id
    (Poolside sends a second id with every later piece)? Another call names its
    function, and comes after the held call's arguments are whole."""
    if not name or type(name) is not str:
        return False
    try:
        orjson.loads(arguments_so_far)
    except orjson.JSONDecodeError:
        return False
    return True


def names_a_function(name: Any) -> bool:
    """Whether a fragment's `name` names a function: text, not empty, and not `"null"`
    (a JSON null written as text, as some LiteLLM versions send it)."""
    return type(name) is str and name != "" and name != "null"


def idless_fragment_starts_a_call(
    held_name: str | None, held_arguments: str, name: Any, arguments: str
) -> bool:
    """A tool-call fragment without an id, at the `index` of a call whose arguments
    are `held_arguments`: another call's, or more of the held one? Whole JSON can take
    no more, so after it a fragment that names another function is another call's,
    and so is one whose arguments open an object that neither repeats the held ones
    with more (all so far: Baidu Qianfan) nor restates them (the same value again:
    vLLM's parsers). A proxy of Gemini 3 sends a second call so, at the first's
    index with no id and an empty name (dyedd/lens#49)."""
    renamed = names_a_function(name) and bool(held_name) and not name.startswith(held_name)
    opens = arguments[:1] == "{" and not arguments.startswith(held_arguments)
    if not (renamed or opens):
        return False
    try:
        held = orjson.loads(held_arguments)
    except orjson.JSONDecodeError:
        return False
    if renamed:
        return True
    try:
        return bool(orjson.loads(arguments) != held)
    except orjson.JSONDecodeError:
        return True  # the other call's arguments come in pieces


def unindexed_fragment_starts_a_call(
    call_id: str | None, name: Any, latest_name: str | None
) -> bool:
    """A tool-call fragment without `index` (Gemini, older Ollama), whose id is not one
    already seen: does it start a new call, or continue the latest one? A new id or a
    new name starts one; anything else (arguments alone) continues."""
    return call_id is not None or bool(name and latest_name and name != latest_name)
