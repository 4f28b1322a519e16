// client.cjs calls tandem's OpenAI-compatible routes with the official
// openai npm client, for internal/e2e/openai_test.go, and prints what it saw
// as one JSON object. Environment:
//
//   OPENAI_MODULE  the openai package folder (.cache/npm/openai/node_modules/openai)
//   BASE_URL       tandem's gateway, http://HOST:PORT/v1
//   CHAT_MODEL     a model for a chat completion and an embedding
//   STREAM_MODEL   a model for a streamed chat completion
//   HOLD_FILE      the instance of STREAM_MODEL writes its last chunk only once
//                  this file exists: the script creates it after the first chunk
'use strict';
const fs = require('fs');
const { OpenAI, NotFoundError } = require(process.env.OPENAI_MODULE);

async function main() {
  const client = new OpenAI({ apiKey: 'unused', baseURL: process.env.BASE_URL, maxRetries: 0, timeout: 60000 });
  const out = {};

  const models = await client.models.list();
  out.models = models.data.map((m) => ({ id: m.id, object: m.object, owned_by: m.owned_by, created: m.created }));

  const messages = [{ role: 'user', content: 'Say hello to tandem please' }];
  const chat = await client.chat.completions.create({ model: process.env.CHAT_MODEL, messages }).withResponse();
  out.chat = {
    cold: chat.response.headers.get('x-tandem-cold-start'),
    model: chat.data.model,
    content: chat.data.choices[0].message.content,
    usage: chat.data.usage,
  };

  const emb = await client.embeddings.create({ model: process.env.CHAT_MODEL, input: ['one two', 'three'] });
  out.embeddings = { count: emb.data.length, dims: emb.data[0].embedding.length, usage: emb.usage };

  const hold = process.env.HOLD_FILE;
  const streamed = await client.chat.completions
    .create({ model: process.env.STREAM_MODEL, messages, stream: true, stream_options: { include_usage: true } })
    .withResponse();
  out.stream = { cold: streamed.response.headers.get('x-tandem-cold-start'), chunks: 0, content: '' };
  for await (const chunk of streamed.data) {
    if (out.stream.chunks++ === 0) {
      // The instance cannot have written its last chunk yet: it waits for
      // this file, which only exists once the first chunk has arrived here.
      out.stream.holdExistedAtFirstChunk = fs.existsSync(hold);
      out.stream.first = chunk.choices[0].delta.content;
      fs.writeFileSync(hold, 'go');
    }
    for (const c of chunk.choices) out.stream.content += c.delta.content || '';
    if (chunk.usage) out.stream.usage = chunk.usage;
  }

  try {
    await client.chat.completions.create({ model: 'no-such-model', messages });
    out.unknown = { error: 'no error' };
  } catch (e) {
    out.unknown = { notFoundError: e instanceof NotFoundError, status: e.status, error: e.error };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`client.cjs: ${e.stack || e}\n`);
  process.exit(1);
});
