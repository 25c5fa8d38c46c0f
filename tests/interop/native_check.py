"""Arbor's own chat routes (/api/v1) through a live Arbor whose upstream is a third-party
OpenAI-compatible server: a blocking send and a streamed send, both stored.

Environment: ARBOR_BASE, MODEL, EXPECT (the upstream's answer).
"""

import json
import os

import httpx

base, model, expect = os.environ["ARBOR_BASE"], os.environ["MODEL"], os.environ["EXPECT"]
credentials = {"username": "native-user", "password": "interop password 1"}
with httpx.Client(base_url=base, timeout=60) as http:
    http.post("/api/v1/users", json=credentials).raise_for_status()
    access = http.post("/api/v1/auth/login", json=credentials).json()["access_token"]
    auth = {"Authorization": f"Bearer {access}"}
    chat = http.post("/api/v1/chats", json={"model_id": model}, headers=auth)
    assert chat.status_code == 201, chat.text
    chat = chat.json()["uuid"]

    sent = http.post(f"/api/v1/chats/{chat}/messages", json={"content": "Hello"}, headers=auth)
    assert sent.status_code == 201, sent.text
    assert sent.json()["content"] == expect, sent.json()

    text, final = "", None
    with http.stream(
        "POST", f"/api/v1/chats/{chat}/messages/stream", json={"content": "Again"}, headers=auth
    ) as events:
        assert events.status_code == 200
        for line in events.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[len("data: "):])
            assert event["type"] != "error", event
            if event["type"] == "chunk":
                text += event["delta"]
            if event["type"] == "final":
                final = event
    assert text == expect and final["content"] == expect, (text, final)
    assert final["usage"]["total_tokens"] > 0, final

    branch = http.get(f"/api/v1/chats/{chat}/messages", headers=auth).json()
    answers = [m["content"] for m in branch if m["role"] == "assistant"]
    assert answers == [expect, expect], branch
print(f"arbor /api/v1 through the upstream: blocking and streamed sends stored ({model})")
