// A fake OpenAI-compatible upstream for the browser tests: streams chat completions as
// SSE with delays, records every request body, and notices when a client goes away.
//
//   node fake-openai.mjs <port>     (port 0 picks a free one; prints "listening <port>")
//
// What the answer looks like depends on the last user message:
//   contains SLOW  → ~60 chunks, 120 ms apart (for stop / refresh-mid-stream tests)
//   contains TABLE → Markdown with a table, a list, a link and a rust code block
//   contains FAIL  → HTTP 500
//   contains QUICK → "ok" at once (for creating many conversations)
//   otherwise      → "Hello from fake model (answer #N). You said: …" in small chunks
// Control: GET /__requests (all recorded bodies), GET /__last (last non-title request),
//          GET /__stats ({completed, cancelled}), POST /__reset.
import http from 'node:http';

const port = Number(process.argv[2] || 0);
let requests = [];
let answerCount = 0;
const stats = { completed: 0, cancelled: 0 };

function lastUserText(body) {
  const msgs = (body.messages || []).filter((m) => m.role === 'user');
  const last = msgs[msgs.length - 1];
  if (!last) return '';
  if (typeof last.content === 'string') return last.content;
  return (last.content || []).filter((p) => p.type === 'text').map((p) => p.text).join('\n');
}

// Title requests use OPENAI_TITLE_MODEL (gpt-4o-mini by default); chat uses another model.
function isTitleRequest(body) {
  return (body.model || '') === (process.env.FAKE_TITLE_MODEL || 'gpt-4o-mini');
}

function answerFor(text) {
  answerCount += 1;
  if (/SLOW/.test(text)) {
    const words = [];
    for (let i = 1; i <= 60; i++) words.push(`word${i} `);
    return { chunks: words, delay: 120 };
  }
  if (/TABLE/.test(text)) {
    const md = 'Here is a table:\n\n| Fruit | Count |\n|---|---:|\n| apple | 3 |\n| pear | 5 |\n\n' +
      '- first item\n- second item\n\nSee [the docs](https://example.com/docs).\n\n' +
      '```rust\nfn main() {\n    let answer = 42; // the answer\n    println!("{answer}");\n}\n```\n';
    const chunks = [];
    for (let i = 0; i < md.length; i += 12) chunks.push(md.slice(i, i + 12));
    return { chunks, delay: 15 };
  }
  if (/QUICK/.test(text)) return { chunks: ['ok'], delay: 0 };
  const said = text.replace(/\s+/g, ' ').slice(0, 60);
  const full = `Hello from fake model (answer #${answerCount}). You said: ${said}`;
  const chunks = full.match(/.{1,6}/gs) || [full];
  return { chunks, delay: 30 };
}

function sse(res, obj) {
  res.write(`data: ${JSON.stringify(obj)}\n\n`);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/__requests') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(requests));
  }
  if (req.method === 'GET' && url.pathname === '/__last') {
    const chat = requests.filter((r) => !r.__title);
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(chat[chat.length - 1] || null));
  }
  if (req.method === 'GET' && url.pathname === '/__stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify(stats));
  }
  if (req.method === 'POST' && url.pathname === '/__reset') {
    requests = [];
    res.writeHead(204);
    return res.end();
  }
  if (req.method === 'GET' && /\/models$/.test(url.pathname)) {
    res.writeHead(200, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ object: 'list', data: [{ id: 'gpt-4o', object: 'model', created: 0, owned_by: 'fake' }] }));
  }
  if (req.method !== 'POST' || !/\/chat\/completions$/.test(url.pathname)) {
    res.writeHead(404);
    return res.end();
  }
  let raw = '';
  req.on('data', (c) => (raw += c));
  req.on('end', async () => {
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      res.writeHead(400);
      return res.end();
    }
    const title = isTitleRequest(body);
    body.__title = title;
    requests.push(body);
    const created = Math.floor(Date.now() / 1000);
    const id = `chatcmpl-${requests.length}`;
    const model = body.model || 'gpt-4o';
    if (title) {
      const content = 'Fake title ' + (lastUserText(body).replace(/[^A-Za-z0-9 ]/g, '').split(' ').filter(Boolean).slice(0, 3).join(' ') || 'chat');
      if (body.stream) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { role: 'assistant', content }, finish_reason: null }] });
        sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
        res.write('data: [DONE]\n\n');
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ id, object: 'chat.completion', created, model, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }], usage: { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 } }));
    }
    const text = lastUserText(body);
    if (/FAIL/.test(text)) {
      res.writeHead(500, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ error: { message: 'fake upstream exploded', type: 'server_error' } }));
    }
    const { chunks, delay } = answerFor(text);
    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      stats.completed += 1;
      return res.end(JSON.stringify({ id, object: 'chat.completion', created, model, choices: [{ index: 0, message: { role: 'assistant', content: chunks.join('') }, finish_reason: 'stop' }], usage: { prompt_tokens: 20, completion_tokens: chunks.length, total_tokens: 20 + chunks.length } }));
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    let gone = false;
    res.on('close', () => {
      if (!res.writableFinished) {
        gone = true;
        stats.cancelled += 1;
      }
    });
    sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
    for (const c of chunks) {
      if (gone) return;
      await new Promise((r) => setTimeout(r, delay));
      if (gone) return;
      sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { content: c }, finish_reason: null }] });
    }
    sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
    if (body.stream_options && body.stream_options.include_usage) {
      sse(res, { id, object: 'chat.completion.chunk', created, model, choices: [], usage: { prompt_tokens: 20, completion_tokens: chunks.length, total_tokens: 20 + chunks.length } });
    }
    res.write('data: [DONE]\n\n');
    stats.completed += 1;
    res.end();
  });
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
