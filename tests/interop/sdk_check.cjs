// The official OpenAI Node SDK against a live Arbor's /v1 surface, with an Arbor API key.
// Environment as sdk_check.py: ARBOR_BASE, ARBOR_KEY, MODEL, EXPECT. Exits non-zero on the
// first check that fails.
'use strict';

const assert = require('node:assert/strict');
const OpenAI = require('openai');
const { VERSION } = require('openai/version');

async function main() {
  const { ARBOR_BASE: base, ARBOR_KEY: key, MODEL: model, EXPECT: expect } = process.env;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello' },
  ];
  let checks = 0;

  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.ok(ids.includes(model), JSON.stringify(ids));
  checks += 1;

  const reply = await client.chat.completions.create({ model, messages });
  assert.equal(reply.object, 'chat.completion');
  assert.equal(reply.choices[0].message.content, expect);
  assert.equal(reply.choices[0].finish_reason, 'stop');
  assert.ok(reply.usage.total_tokens > 0);
  checks += 1;

  const stream = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.choices.length > 0) {
      text += chunk.choices[0].delta.content ?? '';
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(text, expect);
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens > 0, JSON.stringify(usage));
  checks += 1;

  await assert.rejects(
    client.chat.completions.create({ model: 'nobody/no-such-model', messages }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
  );
  checks += 1;
  await assert.rejects(
    client.chat.completions.create({ model, messages, n: 2 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'n',
  );
  checks += 1;
  const forged = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'arb_not_a_key', maxRetries: 0 });
  await assert.rejects(forged.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
  checks += 1;

  console.log(`node openai ${VERSION}: ${checks} checks passed against ${model}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
