"""The official OpenAI Python SDK against a live Arbor's /v1 surface, with an Arbor API key.

Environment: ARBOR_BASE (http://host:port), ARBOR_KEY, MODEL (a model of the catalogue),
EXPECT (the text the upstream answers for MODEL).
Exits non-zero (an AssertionError or the SDK's exception) on the first check that fails.
"""

import os

import openai

base = os.environ["ARBOR_BASE"]
key = os.environ["ARBOR_KEY"]
model = os.environ["MODEL"]
expect = os.environ["EXPECT"]
client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
conversation = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]
checks = 0

# The catalogue, in OpenAI's list shape (the SDK pages through it).
ids = [m.id for m in client.models.list()]
assert model in ids, ids
assert client.models.retrieve(model).id == model
checks += 1

# A blocking completion.
reply = client.chat.completions.create(model=model, messages=conversation)
assert reply.object == "chat.completion", reply
assert reply.choices[0].message.role == "assistant"
assert reply.choices[0].message.content == expect, reply.choices[0].message.content
assert reply.choices[0].finish_reason == "stop"
assert reply.usage is not None and reply.usage.total_tokens > 0, reply.usage
checks += 1

# A streamed completion with usage.
stream = client.chat.completions.create(
    model=model,
    messages=conversation,
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage, finish = [], None, None
for chunk in stream:
    assert chunk.object == "chat.completion.chunk"
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage is not None:
        usage = chunk.usage
assert "".join(parts) == expect, parts
assert finish == "stop", finish
assert usage is not None and usage.completion_tokens > 0, usage
checks += 1

# Stored in a new chat, named by the response headers.
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=conversation, extra_headers={"X-Arbor-Chat": "new"}
)
assert raw.headers.get("x-arbor-chat"), dict(raw.headers)
assert raw.parse().choices[0].message.content == expect
checks += 1

# Errors as the SDK knows them from OpenAI.
try:
    client.chat.completions.create(model="nobody/no-such-model", messages=conversation)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", e
checks += 1
try:
    client.chat.completions.create(model=model, messages=conversation, n=2)
    raise AssertionError("n = 2 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.param == "n", e
checks += 1
try:
    openai.OpenAI(base_url=f"{base}/v1", api_key="arb_not_a_key", max_retries=0).models.list()
    raise AssertionError("a forged key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e
checks += 1

print(f"python openai {openai.__version__}: {checks} checks passed against {model}")
