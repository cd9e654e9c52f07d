"""An OpenAI chat completions request rewritten as an Anthropic messages request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .base import JSON, Carry, as_dict, as_list, as_str, malformed, parse_data_url

# Fields that mean nothing to translate when they hold their neutral value.
_NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v in (None, 1),
    "logprobs": lambda v: v in (None, False),
    "top_logprobs": lambda v: v is None,
    "frequency_penalty": lambda v: v in (None, 0),
    "presence_penalty": lambda v: v in (None, 0),
    "logit_bias": lambda v: not v,
    "seed": lambda v: v is None,
    "response_format": lambda v: v is None or v == {"type": "text"},
    "modalities": lambda v: v is None or v == ["text"],
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "store": lambda v: v in (None, False),
    "metadata": lambda v: not v,
    "service_tier": lambda v: v in (None, "auto"),  # Anthropic's default is auto too
    "reasoning_effort": lambda v: v in (None, "none"),
    "verbosity": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "functions": lambda v: v is None,
    "function_call": lambda v: v is None,
    "prompt_cache_key": lambda v: v is None,
    "prompt_cache_retention": lambda v: v is None,
    # Consumed by the stream translator (the usage chunk), so nothing is lost.
    "stream_options": lambda v: True,
}
_SAME = ("model", "temperature", "top_p", "stream")
_HANDLED = {
    *_SAME,
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "user",
    "safety_identifier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}


def to_anthropic_request(doc: JSON, carry: Carry, default_max_tokens: int) -> JSON:
    out: JSON = {k: doc[k] for k in _SAME if doc.get(k) is not None}
    for name, value in doc.items():
        if name not in _HANDLED and not _NEUTRAL.get(name, lambda v: False)(value):
            carry.unsupported(name)
    system, messages = _messages(as_list(doc.get("messages"), "messages"), carry)
    if system is not None:
        out["system"] = system
    out["messages"] = messages
    limit = doc.get("max_completion_tokens")
    if limit is None:
        limit = doc.get("max_tokens")
    out["max_tokens"] = default_max_tokens if limit is None else limit
    stop = doc.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else as_list(stop, "stop")
    user = doc.get("user")
    safety = doc.get("safety_identifier")
    if user is not None and safety is not None and safety != user:
        carry.unsupported("safety_identifier", "cannot be sent beside a different `user`")
    if user is not None or safety is not None:
        out["metadata"] = {"user_id": user if user is not None else safety}
    tools = [
        _tool(t, f"tools[{i}]", carry)
        for i, t in enumerate(as_list(doc.get("tools") or [], "tools"))
    ]
    if tools:
        out["tools"] = [t for t in tools if t is not None]
    choice = _tool_choice(doc.get("tool_choice"), doc.get("parallel_tool_calls"), carry)
    if choice is not None and out.get("tools"):
        out["tool_choice"] = choice
    elif choice is not None and choice["type"] in ("any", "tool"):
        raise malformed("tool_choice", "asks for a tool call but the request has no tools")
    return out


def _tool(tool: Any, where: str, carry: Carry) -> JSON | None:
    tool = as_dict(tool, where)
    if tool.get("type", "function") != "function":
        carry.unsupported(where, f"of type {tool.get('type')!r} has no Anthropic counterpart")
        return None
    fn = as_dict(tool.get("function"), f"{where}.function")
    out: JSON = {"name": as_str(fn.get("name"), f"{where}.function.name")}
    if fn.get("description") is not None:
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if fn.get("strict"):
        carry.unsupported(f"{where}.function.strict")
    return out


def _tool_choice(choice: Any, parallel: Any, carry: Carry) -> JSON | None:
    if choice is None and parallel is not False:
        return None
    if choice in (None, "auto"):
        out: JSON = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}  # Anthropic's none takes no parallel setting: none is used
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = as_dict(choice.get("function"), "tool_choice.function").get("name")
        out = {"type": "tool", "name": as_str(name, "tool_choice.function.name")}
    else:
        carry.unsupported("tool_choice", "of this kind has no Anthropic counterpart")
        return None
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


# Messages ----------------------------------------------------------------------------------------


def _messages(messages: list[Any], carry: Carry) -> tuple[Any, list[JSON]]:
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        msg = as_dict(raw, where)
        role = msg.get("role")
        for key in ("name", "audio", "function_call"):
            if msg.get(key) is not None:
                carry.unsupported(f"{where}.{key}")
        if role in ("system", "developer"):
            # Anthropic has one system prompt, before the conversation: every system or
            # developer message goes there, in order.
            system += _text_blocks(msg.get("content"), where, carry)
        elif role == "user":
            _push(turns, "user", _user_content(msg.get("content"), where, carry))
        elif role == "assistant":
            _push(turns, "assistant", _assistant_content(msg, where, carry))
        elif role == "tool":
            _push(turns, "user", [_tool_result(msg, where, carry)])
        else:
            raise malformed(f"{where}.role", f"{role!r} is not a role this translation knows")
    if not system:
        return None, turns
    if len(system) == 1 and "cache_control" not in system[0]:
        return system[0]["text"], turns
    return system, turns


def _push(turns: list[JSON], role: str, content: str | list[JSON]) -> None:
    """Append a turn; Anthropic wants roles to alternate, so a same-role turn is merged."""
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] = _blocks(turns[-1]["content"]) + _blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _blocks(content: str | list[JSON]) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _text_blocks(content: Any, where: str, carry: Carry) -> list[JSON]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[JSON] = []
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        part = as_dict(raw, at)
        if part.get("type") in ("text", "refusal"):
            blocks += _text_part(part, at)
        else:
            carry.unsupported(at, f"of type {part.get('type')!r} cannot go in this message")
    return blocks


def _text_part(part: JSON, at: str) -> list[JSON]:
    kind = part["type"]
    text = as_str(part.get(kind), f"{at}.{kind}")
    # Anthropic refuses empty text blocks; an empty part carries nothing.
    return [_with_cache_control({"type": "text", "text": text}, part)] if text else []


def _with_cache_control(block: JSON, part: JSON) -> JSON:
    # Some OpenAI clients mark parts for Anthropic prompt caching; the mark is kept.
    if part.get("cache_control") is not None:
        block["cache_control"] = part["cache_control"]
    return block


def _user_content(content: Any, where: str, carry: Carry) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    blocks: list[JSON] = []
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        part = as_dict(raw, at)
        kind = part.get("type")
        if kind == "text":
            blocks += _text_part(part, at)
        elif kind == "image_url":
            blocks.append(_with_cache_control(_image(part, at, carry), part))
        elif kind == "file":
            block = _document(part, at, carry)
            if block is not None:
                blocks.append(_with_cache_control(block, part))
        else:
            carry.unsupported(at, f"of type {kind!r} has no Anthropic counterpart")
    return blocks


def _image(part: JSON, at: str, carry: Carry) -> JSON:
    image = part.get("image_url")
    spec = {"url": image} if isinstance(image, str) else as_dict(image, f"{at}.image_url")
    url = as_str(spec.get("url"), f"{at}.image_url.url")
    if spec.get("detail") not in (None, "auto"):
        carry.unsupported(f"{at}.image_url.detail")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    parsed = parse_data_url(url)
    if parsed is None:
        raise malformed(f"{at}.image_url.url", "must be an http(s) URL or a base64 data URL")
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]},
    }


def _document(part: JSON, at: str, carry: Carry) -> JSON | None:
    spec = as_dict(part.get("file"), f"{at}.file")
    parsed = parse_data_url(spec["file_data"]) if isinstance(spec.get("file_data"), str) else None
    if parsed is None:
        carry.unsupported(f"{at}.file", "without file_data as a base64 data URL cannot be sent")
        return None
    source = {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
    block: JSON = {"type": "document", "source": source}
    if spec.get("filename"):
        block["title"] = spec["filename"]
    return block


def _assistant_content(msg: JSON, where: str, carry: Carry) -> str | list[JSON]:
    content = msg.get("content")
    calls = msg.get("tool_calls") or []
    refusal = msg.get("refusal")
    if isinstance(content, str) and not calls and not refusal:
        return content
    blocks = _text_blocks(content, where, carry) if content is not None else []
    if refusal:
        blocks.append({"type": "text", "text": as_str(refusal, f"{where}.refusal")})
    for k, raw in enumerate(as_list(calls, f"{where}.tool_calls")):
        at = f"{where}.tool_calls[{k}]"
        call = as_dict(raw, at)
        fn = as_dict(call.get("function"), f"{at}.function")
        blocks.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id"), f"{at}.id"),
                "name": as_str(fn.get("name"), f"{at}.function.name"),
                "input": _arguments(fn.get("arguments"), f"{at}.function.arguments"),
            }
        )
    return blocks


def _arguments(arguments: Any, where: str) -> JSON:
    if arguments in (None, ""):
        return {}
    try:
        parsed = json.loads(as_str(arguments, where))
    except ValueError:
        raise malformed(where, "is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise malformed(where, "must be a JSON object")
    return parsed


def _tool_result(msg: JSON, where: str, carry: Carry) -> JSON:
    content = msg.get("content")
    block: JSON = {
        "type": "tool_result",
        "tool_use_id": as_str(msg.get("tool_call_id"), f"{where}.tool_call_id"),
    }
    if isinstance(content, str) or content is None:
        block["content"] = content or ""
    else:
        block["content"] = _text_blocks(content, where, carry)
    return block
