"""A local stand-in for Slack, for `make run` without Slack credentials and for tests: the Web API
methods the notifier uses (`auth.test`, `chat.postMessage`, `chat.update`, `chat.postEphemeral`), a
page showing the messages with working Approve / Deny buttons, and clicks posted to the notifier's
interactivity endpoint as Slack posts them (a signed `block_actions` payload, form-encoded).

    python -m services.notifier.standin --port 8084 --interactivity-url http://127.0.0.1:8083/slack/interactivity

(the signing secret comes from PURSESTRINGS_SLACK_SIGNING_SECRET or --signing-secret).

Test hooks, not Slack's: `POST /_standin/faults` makes the next calls of a method fail (status,
Retry-After), `GET /_standin/messages` lists what was posted, `POST /_standin/click` clicks a button.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import uvicorn
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

DEFAULT_USER = "U0APPROVER"


@dataclass
class Fault:
    """The next `count` calls of a method answer `status` (with Retry-After when given)."""

    status: int
    count: int
    retry_after: int | None = None


@dataclass
class Workspace:
    """What the stand-in remembers: messages by (channel id, ts), ephemerals, every call."""

    interactivity_url: str
    signing_secret: str
    token: str | None = None
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    ephemerals: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    clock: float = 0.0

    def next_ts(self) -> str:
        """Slack's message timestamps: seconds with six decimals, unique and increasing."""
        self.clock = max(self.clock + 0.000001, time.time())
        return f"{self.clock:.6f}"


def channel_id(channel: str) -> str:
    """A stable channel id for a name (#approvals → C...); ids pass through."""
    if channel.startswith(("C", "D", "G")) and channel.isalnum():
        return channel
    return "C" + hashlib.sha256(channel.lstrip("#").encode()).hexdigest()[:10].upper()


def create_app(workspace: Workspace) -> Starlette:
    """The stand-in's ASGI app."""

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        args = await _arguments(request)
        token = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        fault = workspace.faults.get(method)
        if fault is not None and fault.count > 0:
            fault.count -= 1
            workspace.calls.append({"method": method, "status": fault.status})
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            error = "ratelimited" if fault.status == 429 else "fatal_error"  # noqa: PLR2004 - HTTP 429
            return JSONResponse({"ok": False, "error": error}, status_code=fault.status, headers=headers)
        workspace.calls.append({"method": method, "status": 200})
        if not token or (workspace.token is not None and token != workspace.token):
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        handler = _METHODS.get(method)
        if handler is None:
            return JSONResponse({"ok": False, "error": "unknown_method"})
        return JSONResponse(handler(workspace, args))

    async def faults(request: Request) -> Response:
        body = await request.json()
        workspace.faults[body["method"]] = Fault(
            int(body["status"]), int(body.get("count", 1)), body.get("retry_after")
        )
        return JSONResponse({"ok": True})

    async def listing(_: Request) -> Response:
        return JSONResponse(
            {
                "messages": list(workspace.messages.values()),
                "ephemerals": workspace.ephemerals,
                "calls": workspace.calls,
            }
        )

    async def click(request: Request) -> Response:
        from_page = "form" in request.headers.get("content-type", "")
        args = await _arguments(request)
        status, body = await _click(workspace, args)
        if from_page:
            return RedirectResponse("/", status_code=303)
        return JSONResponse({"status": status, "body": body})

    async def page(_: Request) -> Response:
        return HTMLResponse(_page(workspace))

    return Starlette(
        routes=[
            Route("/api/{method}", api, methods=["POST", "GET"]),
            Route("/_standin/faults", faults, methods=["POST"]),
            Route("/_standin/messages", listing),
            Route("/_standin/click", click, methods=["POST"]),
            Route("/", page),
        ]
    )


async def _arguments(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if "json" in request.headers.get("content-type", ""):
        return dict(json.loads(raw or b"{}"))
    arguments: dict[str, Any] = {key: values[0] for key, values in parse_qs(raw.decode()).items()}
    for key in ("blocks", "attachments"):
        if isinstance(arguments.get(key), str):
            arguments[key] = json.loads(arguments[key])
    return arguments | dict(request.query_params)


def _auth_test(_: Workspace, __: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "url": "http://localhost/", "team": "pursestrings (local)", "user": "pursestrings",
            "team_id": "T0LOCAL", "user_id": "U0BOT", "bot_id": "B0LOCAL"}  # fmt: skip


def _post_message(workspace: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("channel"):
        return {"ok": False, "error": "channel_not_found"}
    channel, ts = channel_id(str(args["channel"])), workspace.next_ts()
    message = {"channel": channel, "channel_name": args["channel"], "ts": ts, "text": args.get("text", ""),
               "blocks": args.get("blocks") or [], "updates": 0}  # fmt: skip
    workspace.messages[(channel, ts)] = message
    return {"ok": True, "channel": channel, "ts": ts, "message": message}


def _update(workspace: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    message = workspace.messages.get((str(args.get("channel", "")), str(args.get("ts", ""))))
    if message is None:
        return {"ok": False, "error": "message_not_found"}
    message.update(text=args.get("text", message["text"]), blocks=args.get("blocks", message["blocks"]),
                   updates=message["updates"] + 1)  # fmt: skip
    return {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": message["text"]}


def _post_ephemeral(workspace: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    if not args.get("channel") or not args.get("user"):
        return {"ok": False, "error": "channel_not_found" if not args.get("channel") else "user_not_in_channel"}
    workspace.ephemerals.append({"channel": channel_id(str(args["channel"])), "user": args["user"],
                                 "text": args.get("text", "")})  # fmt: skip
    return {"ok": True, "message_ts": workspace.next_ts()}


_METHODS = {
    "auth.test": _auth_test,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
}


def _button(message: dict[str, Any], action_id: str) -> dict[str, Any] | None:
    for block in message["blocks"]:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                return dict(element)
    return None


def block_actions(message: dict[str, Any], button: dict[str, Any], user: str) -> dict[str, Any]:
    """The `block_actions` payload Slack sends when `user` clicks `button` on `message`."""
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": "T0LOCAL"},
        "api_app_id": "A0LOCAL",
        "team": {"id": "T0LOCAL", "domain": "pursestrings-local"},
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"]},
        "channel": {"id": message["channel"], "name": str(message["channel_name"]).lstrip("#")},
        "message": {"ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
        "trigger_id": f"{int(time.time())}.local.{hashlib.sha256(now.encode()).hexdigest()[:16]}",
        "response_url": "http://127.0.0.1/unused",
        "actions": [{"type": "button", "block_id": "approval", "action_id": button["action_id"],
                     "value": button.get("value"), "text": button.get("text"), "action_ts": now}],
    }  # fmt: skip


def signed_form(
    payload: dict[str, Any], signing_secret: str, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The form body and headers of an interactivity request, signed as Slack signs it."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body) or ""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }
    return body, headers


async def _click(workspace: Workspace, args: dict[str, Any]) -> tuple[int, str]:
    message = workspace.messages.get((str(args.get("channel", "")), str(args.get("ts", ""))))
    if message is None:
        return 404, "no such message"
    button = _button(message, str(args.get("action_id", "")))
    if button is None:
        return 404, "no such button on the message (already decided?)"
    payload = block_actions(message, button, str(args.get("user") or DEFAULT_USER))
    body, headers = signed_form(payload, workspace.signing_secret)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(workspace.interactivity_url, content=body, headers=headers)
    return response.status_code, response.text


def _text(block: dict[str, Any]) -> str:
    parts = []
    if "text" in block and isinstance(block["text"], dict):
        parts.append(block["text"].get("text", ""))
    parts += [f.get("text", "") for f in block.get("fields", [])]
    parts += [e.get("text", "") for e in block.get("elements", []) if block.get("type") == "context"]
    return "<br>".join(html.escape(part).replace("\n", "<br>") for part in parts)


def _page(workspace: Workspace) -> str:
    cards = []
    for message in sorted(workspace.messages.values(), key=lambda m: m["ts"], reverse=True):
        body = []
        for block in message["blocks"]:
            if block.get("type") == "header":
                body.append(f"<h3>{html.escape(block['text']['text'])}</h3>")
            elif block.get("type") == "actions":
                for button in block.get("elements", []):
                    confirm = button.get("confirm", {}).get("text", {}).get("text", "Sure?")
                    body.append(
                        f"<form method='post' action='/_standin/click' style='display:inline' "
                        f'onsubmit="return confirm({html.escape(json.dumps(confirm))})">'
                        f"<input type='hidden' name='channel' value='{html.escape(message['channel'])}'>"
                        f"<input type='hidden' name='ts' value='{html.escape(message['ts'])}'>"
                        f"<input type='hidden' name='action_id' value='{html.escape(button['action_id'])}'>"
                        f"as <input name='user' value='{DEFAULT_USER}' size='12'> "
                        f"<button class='{html.escape(button.get('style', ''))}'>"
                        f"{html.escape(button['text']['text'])}</button></form> "
                    )
            else:
                body.append(f"<p>{_text(block)}</p>")
        cards.append(f"<div class='msg'><small>{html.escape(str(message['channel_name']))} · {message['ts']}"
                     f"{' · updated' if message['updates'] else ''}</small>{''.join(body)}</div>")  # fmt: skip
    ephemerals = "".join(
        f"<li>to {html.escape(e['user'])}: {html.escape(e['text'])}</li>" for e in workspace.ephemerals[-10:]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
        "<title>Slack (local stand-in)</title><style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
        ".msg{border:1px solid #ccc;border-radius:6px;padding:0.5em 1em;margin:1em 0}"
        "button.primary{background:#2eb67d;color:#fff}button.danger{background:#e01e5a;color:#fff}</style></head>"
        f"<body><h2>Slack (local stand-in)</h2><p>Messages the notifier posted; the buttons post signed clicks to "
        f"{html.escape(workspace.interactivity_url)}.</p>{''.join(cards) or '<p>No messages yet.</p>'}"
        f"<h4>Ephemeral replies</h4><ul>{ephemerals}</ul></body></html>"
    )


def main() -> None:
    """Serve the stand-in until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8084)
    parser.add_argument("--interactivity-url", default="http://127.0.0.1:8083/slack/interactivity")
    parser.add_argument("--signing-secret", default=os.environ.get("PURSESTRINGS_SLACK_SIGNING_SECRET", ""))
    parser.add_argument("--token", default=os.environ.get("PURSESTRINGS_SLACK_BOT_TOKEN"))
    options = parser.parse_args()
    if not options.signing_secret:
        parser.error("a signing secret is needed (--signing-secret or PURSESTRINGS_SLACK_SIGNING_SECRET)")
    workspace = Workspace(options.interactivity_url, options.signing_secret, options.token)
    uvicorn.run(create_app(workspace), host=options.host, port=options.port, log_level="warning")


if __name__ == "__main__":
    main()
