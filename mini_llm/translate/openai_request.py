"""An Anthropic messages request rewritten as an OpenAI chat completions request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import JSON, Carry, as_dict, as_list, as_str, data_url, dumps, malformed

# Fields that mean nothing to translate when they hold their neutral value.
_NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "top_k": lambda v: v is None,
    "thinking": lambda v: v is None or (isinstance(v, dict) and v.get("type") == "disabled"),
    "service_tier": lambda v: v in (None, "auto"),
    "container": lambda v: v is None,
    "mcp_servers": lambda v: not v,
    "context_management": lambda v: v is None,
    "output_format": lambda v: v is None,
    "output_config": lambda v: not v,
}
_SAME = ("model", "temperature", "top_p", "stream")
_HANDLED = {*_SAME, "messages", "system", "max_tokens", "stop_sequences", "metadata"}
_HANDLED |= {"tools", "tool_choice"}


def to_openai_request(doc: JSON, carry: Carry) -> JSON:
    out: JSON = {k: doc[k] for k in _SAME if doc.get(k) is not None}
    for name, value in doc.items():
        if name not in _HANDLED and not _NEUTRAL.get(name, lambda v: False)(value):
            carry.unsupported(name)
    messages: list[JSON] = []
    system = doc.get("system")
    if system:
        messages.append({"role": "system", "content": _system(system)})
    messages += _messages(as_list(doc.get("messages"), "messages"), carry)
    out["messages"] = messages
    if doc.get("max_tokens") is not None:
        # max_tokens is refused by OpenAI's reasoning models; max_completion_tokens works
        # for all of them.
        out["max_completion_tokens"] = doc["max_tokens"]
    if doc.get("stop_sequences"):
        out["stop"] = as_list(doc["stop_sequences"], "stop_sequences")
    if out.get("stream"):
        # The usage chunk fills the Anthropic stream's message_delta usage.
        out["stream_options"] = {"include_usage": True}
    for key, value in as_dict(doc.get("metadata") or {}, "metadata").items():
        if key != "user_id":
            carry.unsupported(f"metadata.{key}")
        elif value is not None:
            out["user"] = value
    tools = [
        _tool(t, f"tools[{i}]", carry)
        for i, t in enumerate(as_list(doc.get("tools") or [], "tools"))
    ]
    if tools:
        out["tools"] = [t for t in tools if t is not None]
    choice = doc.get("tool_choice")
    if choice is not None and out.get("tools"):
        out.update(_tool_choice(as_dict(choice, "tool_choice"), carry))
    elif isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise malformed("tool_choice", "asks for a tool call but the request has no tools")
    return out


def _system(system: Any) -> str | list[JSON]:
    if isinstance(system, str):
        return system
    # cache_control marks are Anthropic's; OpenAI caches prompt prefixes by itself.
    parts = [
        {"type": "text", "text": as_str(as_dict(b, f"system[{i}]").get("text"), f"system[{i}]")}
        for i, b in enumerate(as_list(system, "system"))
    ]
    return parts[0]["text"] if len(parts) == 1 else parts


def _tool(tool: Any, where: str, carry: Carry) -> JSON | None:
    tool = as_dict(tool, where)
    if tool.get("type") not in (None, "custom"):
        carry.unsupported(where, f"of type {tool['type']!r} (a server tool) cannot be sent")
        return None
    fn: JSON = {"name": as_str(tool.get("name"), f"{where}.name")}
    if tool.get("description") is not None:
        fn["description"] = tool["description"]
    fn["parameters"] = as_dict(tool.get("input_schema"), f"{where}.input_schema")
    if tool.get("strict"):
        fn["strict"] = True
    return {"type": "function", "function": fn}


def _tool_choice(choice: JSON, carry: Carry) -> JSON:
    kind = choice.get("type")
    out: JSON = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = as_str(choice.get("name"), "tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        carry.unsupported("tool_choice", f"of type {kind!r} has no OpenAI counterpart")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# Messages ----------------------------------------------------------------------------------------


def _messages(messages: list[Any], carry: Carry) -> list[JSON]:
    out: list[JSON] = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        msg = as_dict(raw, where)
        role = msg.get("role")
        if role == "user":
            out += _user(msg.get("content"), where, carry)
        elif role == "assistant":
            if i == len(messages) - 1:
                # Anthropic continues a last assistant turn; OpenAI would answer after it.
                carry.unsupported(where, "(a prefilled answer) cannot be continued by OpenAI")
                continue
            out.append(_assistant(msg.get("content"), where, carry))
        else:
            raise malformed(f"{where}.role", "must be user or assistant")
    return out


def _user(content: Any, where: str, carry: Carry) -> list[JSON]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[JSON] = []
    parts: list[JSON] = []
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        block = as_dict(raw, at)
        if block.get("type") == "tool_result":
            # Tool answers are messages of their own in OpenAI, right after the call.
            results.append(_tool_result(block, at, carry))
        else:
            part = _part(block, at, carry)
            if part is not None:
                parts.append(part)
    if not parts:
        return results
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*results, {"role": "user", "content": parts[0]["text"]}]
    return [*results, {"role": "user", "content": parts}]


def _part(block: JSON, at: str, carry: Carry) -> JSON | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"), f"{at}.text")}
    source = as_dict(block.get("source"), f"{at}.source") if kind in ("image", "document") else {}
    if kind == "image" and source.get("type") == "base64":
        url = data_url(source.get("media_type", ""), as_str(source.get("data"), f"{at}.source"))
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "image" and source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": as_str(source.get("url"), at)}}
    if kind == "document" and source.get("type") == "base64":
        name = block.get("title") or "document.pdf"
        url = data_url(source.get("media_type", ""), as_str(source.get("data"), f"{at}.source"))
        return {"type": "file", "file": {"filename": name, "file_data": url}}
    if kind == "document" and source.get("type") == "text":
        return {"type": "text", "text": as_str(source.get("data"), f"{at}.source.data")}
    carry.unsupported(at, f"(a {kind} block) has no OpenAI counterpart here")
    return None


def _tool_result(block: JSON, at: str, carry: Carry) -> JSON:
    if block.get("is_error"):
        carry.unsupported(f"{at}.is_error", "has no OpenAI counterpart (tool messages carry text)")
    content = block.get("content")
    out: JSON = {"role": "tool", "tool_call_id": as_str(block.get("tool_use_id"), at)}
    if content is None or isinstance(content, str):
        out["content"] = content or ""
        return out
    parts: list[JSON] = []
    for k, raw in enumerate(as_list(content, f"{at}.content")):
        item = as_dict(raw, f"{at}.content[{k}]")
        if item.get("type") == "text":
            parts.append({"type": "text", "text": as_str(item.get("text"), f"{at}.content[{k}]")})
        else:
            carry.unsupported(
                f"{at}.content[{k}]", "(not text) cannot go in an OpenAI tool message"
            )
    out["content"] = parts[0]["text"] if len(parts) == 1 else parts or ""
    return out


def _assistant(content: Any, where: str, carry: Carry) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[JSON] = []
    for j, raw in enumerate(as_list(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        block = as_dict(raw, at)
        if block.get("type") == "text":
            texts.append(as_str(block.get("text"), f"{at}.text"))
        elif block.get("type") == "tool_use":
            fn = {
                "name": as_str(block.get("name"), f"{at}.name"),
                "arguments": dumps(block.get("input") or {}),
            }
            calls.append(
                {"id": as_str(block.get("id"), f"{at}.id"), "type": "function", "function": fn}
            )
        else:
            carry.unsupported(at, f"(a {block.get('type')} block) has no OpenAI counterpart")
    out: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        out["tool_calls"] = calls
    return out
