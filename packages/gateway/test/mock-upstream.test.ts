/**
 * Self-tests of the conformance-test helpers: the scripted mock upstream (M) and the raw recording
 * client, checked against each other and against undici.
 */
import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Readable } from 'node:stream';
import { request, Agent } from 'undici';
import {
  startMockUpstream,
  CH,
  EV,
  DONE,
  sse,
  sseScript,
  jsonResponse,
  deliver,
  scriptBody,
  chatCompletion,
  chainHandlers,
  modelsHandler,
  ollamaEmulationHandler,
  DELIVERY_MODES,
  type MockUpstream,
  type Script,
} from './helpers/mock-upstream.ts';
import { rawRequest, parseSse, eventPayloads, SseParser } from './helpers/raw-client.ts';

/** CASE-01's script: the usage event cut across writes, including between the two LFs. */
function case01Script(): Script {
  const E1 = EV(CH('"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}],"usage":null'));
  const E2 = EV(CH('"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null'));
  const E3 = EV(CH('"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}'));
  const cut = E3.indexOf('"prompt_tokens":9,"comp') + '"prompt_tokens":9,"comp'.length;
  const rest = E3.slice(cut);
  assert.equal(rest, 'letion_tokens":2,"total_tokens":11}}\n\n');
  return sseScript(
    [
      { text: E1 },
      { after: 20, text: E2 + E3.slice(0, cut) },
      { after: 20, text: rest.slice(0, -1) },
      { after: 20, text: '\n' + DONE },
    ],
    { headers: [['content-type', 'text/event-stream; charset=utf-8']] },
  );
}

describe('mock upstream + raw client', () => {
  let mock: MockUpstream;
  before(async () => {
    mock = await startMockUpstream();
  });
  after(async () => {
    await mock.close();
  });
  beforeEach(() => mock.reset());

  test('each write arrives as its own chunk, with the scripted delays', async () => {
    mock.enqueue(sseScript(['data: a\n\n', { after: 80, text: 'data: b\n\n' }, { after: 120, text: 'data: c\n\n' }, DONE]));
    const r = await rawRequest(mock.url + '/chat/completions', { json: { stream: true } });
    assert.equal(r.status, 200);
    assert.equal(r.complete, true);
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.deepEqual(
      r.chunks.map((c) => c.bytes.toString()),
      ['data: a\n\n', 'data: b\n\n', 'data: c\n\n', DONE],
    );
    const gap1 = r.chunks[1]!.at - r.chunks[0]!.at;
    const gap2 = r.chunks[2]!.at - r.chunks[1]!.at;
    assert.ok(gap1 >= 70 && gap1 < 400, `gap1 ${gap1}`);
    assert.ok(gap2 >= 110 && gap2 < 450, `gap2 ${gap2}`);
    assert.deepEqual(r.events.map((e) => e.data), ['a', 'b', 'c', '[DONE]']);
    const req = mock.requests[0]!;
    assert.ok(req.scriptDoneAt !== undefined, 'done once the terminator was handed to the socket');
    await mock.waitFor(() => req.closedAt); // raw-client destroys its socket when finished
    assert.equal(req.aborted, false);
    assert.equal(req.closedBy, 'peer');
  });

  test('hex and mixed-segment writes deliver raw bytes (invalid UTF-8 kept)', async () => {
    mock.enqueue({
      status: 200,
      headers: { 'content-type': 'application/octet-stream' },
      writes: [{ hex: 'ff fe 41' }, { segments: [{ text: 'é' }, { hex: 'c3' }, { text: '\r\n' }] }, { hex: '00' }],
    });
    const r = await rawRequest(mock.url + '/bytes');
    assert.deepEqual(r.body, Buffer.from([0xff, 0xfe, 0x41, 0xc3, 0xa9, 0xc3, 0x0d, 0x0a, 0x00]));
    assert.deepEqual(
      r.chunks.map((c) => c.bytes.toString('hex')),
      ['fffe41', 'c3a9c30d0a', '00'],
    );
  });

  test('deliver() keeps the exact body bytes and the same events in all three modes', async () => {
    const base = case01Script();
    const expected = scriptBody(base);
    let reference: unknown[] | undefined;
    for (const mode of DELIVERY_MODES) {
      const s = deliver(base, mode);
      assert.deepEqual(scriptBody(s), expected, mode);
      mock.enqueue(s);
      const r = await rawRequest(mock.url + '/chat/completions', { json: { stream: true } });
      assert.deepEqual(r.body, expected, mode);
      assert.equal(r.events.length, 4, mode);
      const payloads = eventPayloads(r.events);
      assert.deepEqual((payloads[2] as { usage: unknown }).usage, { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
      reference ??= payloads;
      assert.deepEqual(payloads, reference, mode);
      if (mode === 'scripted') assert.equal(r.chunks.length, 4);
      if (mode === 'one-write') assert.equal(r.chunks.length, 1);
      if (mode === 'byte-per-write') {
        // Every byte is its own write; the in-process receiver should see (nearly) all of them apart.
        assert.ok(r.chunks.length >= expected.length * 0.9, `${r.chunks.length} chunks for ${expected.length} bytes`);
        assert.ok(r.chunks.every((c) => c.bytes.length <= 2));
      }
    }
    // byte-per-write keeps each original delay on the first byte of that write.
    const bpw = deliver(base, 'byte-per-write');
    assert.deepEqual(
      bpw.writes!.filter((w) => w.after !== undefined).map((w) => w.after),
      [20, 20, 20],
    );
    assert.equal(deliver(base, 'one-write').writes!.length, 1);
  });

  test('records method, path, raw headers in order (case kept, duplicates) and the exact request bytes', async () => {
    mock.setHandler(() => jsonResponse(200, chatCompletion()));
    const body = '{"model":"mock-llm","messages":[{"role":"user","content":"Hi ☃"}]}';
    const r = await rawRequest(mock.url + '/chat/completions?x=1', {
      headers: [
        ['Authorization', 'Bearer up-cred-TEST-9999'],
        ['X-Dup', 'one'],
        ['x-dup', 'two'],
        ['Connection', 'keep-alive, X-Hop'],
        ['Content-Type', 'application/json'],
      ],
      body,
    });
    assert.equal(r.status, 200);
    assert.equal((r.json() as { object: string }).object, 'chat.completion');
    const req = mock.requests[0]!;
    assert.equal(req.method, 'POST');
    assert.equal(req.path, '/v1/chat/completions?x=1');
    const bodyLen = Buffer.byteLength(body);
    const expectedHeaders: Array<[string, string]> = [
      ['Authorization', 'Bearer up-cred-TEST-9999'],
      ['X-Dup', 'one'],
      ['x-dup', 'two'],
      ['Connection', 'keep-alive, X-Hop'],
      ['Content-Type', 'application/json'],
      ['Host', `127.0.0.1:${mock.port}`],
      ['Content-Length', String(bodyLen)],
    ];
    assert.deepEqual(req.rawHeaders, expectedHeaders);
    assert.deepEqual(req.headers['x-dup'], ['one', 'two']);
    assert.equal(req.headers.authorization, 'Bearer up-cred-TEST-9999');
    assert.deepEqual(req.headerValues('AUTHORIZATION'), ['Bearer up-cred-TEST-9999']);
    assert.equal(req.text(), body);
    assert.deepEqual((req.json() as { messages: unknown[] }).messages, [{ role: 'user', content: 'Hi ☃' }]);
    const expectedRaw =
      'POST /v1/chat/completions?x=1 HTTP/1.1\r\n' + expectedHeaders.map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n' + body;
    assert.deepEqual(req.rawRequest, Buffer.from(expectedRaw, 'utf8'));
    assert.ok(req.rawRequest.includes('up-cred-TEST-9999'));
  });

  test('parses a chunked request body split across TCP writes; rawRequest keeps the chunk framing', async () => {
    mock.setHandler(() => jsonResponse(200, { ok: true }));
    const parts = [
      'POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n',
      '\r\n5\r\nhel',
      'lo\r\n6;ext=1\r\n world\r\n0\r\n',
      'X-Trailer: t\r\n\r\n',
    ];
    const sock = net.connect(mock.port, '127.0.0.1');
    sock.setNoDelay(true);
    await new Promise<void>((r) => sock.once('connect', () => r()));
    let received = '';
    sock.on('data', (d) => (received += d.toString('latin1')));
    for (const p of parts) {
      sock.write(p);
      await new Promise((r) => setTimeout(r, 10));
    }
    await mock.waitForRequests(1);
    const req = mock.requests[0]!;
    assert.equal(req.body.toString(), 'hello world');
    assert.equal(req.rawRequest.toString('latin1'), parts.join(''));
    await mock.waitFor(() => received.includes('{"ok":true}'));
    assert.match(received, /^HTTP\/1\.1 200 OK\r\ncontent-type: application\/json\r\ncontent-length: 11\r\n\r\n\{"ok":true\}$/);
    sock.destroy();
    await mock.waitFor(() => req.closedAt);
    assert.equal(req.closedBy, 'peer');
    assert.equal(req.aborted, false);
  });

  test('keep-alive: several requests on one undici connection; concurrent requests use several', async () => {
    mock.setHandler(
      chainHandlers(modelsHandler(['mock-llm', 'other']), (req) => {
        const b = req.json() as { stream?: boolean; n: number };
        if (b.stream) return sseScript([EV(JSON.stringify({ n: b.n })), { after: 5, text: DONE }]);
        return jsonResponse(200, { n: b.n });
      }),
    );
    const one = new Agent({ connections: 1, keepAliveTimeout: 10_000 });
    try {
      const models = await request(mock.url + '/models', { dispatcher: one });
      assert.equal(models.statusCode, 200);
      assert.deepEqual(((await models.body.json()) as { data: Array<{ id: string }> }).data.map((m) => m.id), ['mock-llm', 'other']);
      for (let n = 0; n < 4; n++) {
        const res = await request(mock.url + '/chat/completions', {
          dispatcher: one,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ n, stream: n % 2 === 1 }),
        });
        assert.equal(res.statusCode, 200);
        const text = await res.body.text();
        if (n % 2 === 1) assert.equal(text, EV(JSON.stringify({ n })) + DONE);
        else assert.deepEqual(JSON.parse(text), { n });
      }
      // A chunked request body (a stream of unknown length) also works on the same connection.
      const chunkedBody = Readable.from([Buffer.from('{"n":'), Buffer.from('9}')]);
      const res = await request(mock.url + '/chat/completions', { dispatcher: one, method: 'POST', body: chunkedBody });
      assert.deepEqual(await res.body.json(), { n: 9 });
      assert.equal(mock.requests.length, 6);
      assert.equal(new Set(mock.requests.map((r) => r.connectionId)).size, 1);
      assert.deepEqual(mock.requests.map((r) => r.indexOnConnection), [0, 1, 2, 3, 4, 5]);
      assert.match(String(mock.requests[5]!.headers['transfer-encoding']), /chunked/);
    } finally {
      await one.close();
    }

    mock.reset();
    mock.setHandler(() => ({ ...jsonResponse(200, { ok: 1 }), headersAfter: 100 }));
    const many = new Agent({ connections: 3 });
    try {
      const results = await Promise.all(
        [1, 2, 3].map(() => request(mock.url + '/x', { dispatcher: many }).then((r) => r.body.json())),
      );
      assert.deepEqual(results, [{ ok: 1 }, { ok: 1 }, { ok: 1 }]);
      assert.equal(new Set(mock.requests.map((r) => r.connectionId)).size, 3);
    } finally {
      await many.close();
    }
  });

  test("'hang' after headers + client abort sets closedAt and aborted", async () => {
    mock.enqueue(sseScript([': ping\n\n'], { close: 'hang' }));
    const r = await rawRequest(mock.url + '/chat/completions', { json: { stream: true }, abortAfterMs: 150 });
    assert.equal(r.aborted, true);
    assert.equal(r.status, 200);
    assert.deepEqual(r.comments, [' ping']);
    const req = mock.requests[0]!;
    const closedAt = await mock.waitFor(() => req.closedAt);
    assert.equal(req.aborted, true);
    assert.equal(req.closedBy, 'peer');
    assert.ok(r.abortedAt !== undefined);
    assert.ok(closedAt - r.abortedAt >= 0 && closedAt - r.abortedAt < 200, `closedAt − abortedAt = ${closedAt - r.abortedAt}`);
  });

  test('headersAfter: Infinity sends nothing; an undici abort sets closedAt (CASE-12 A shape)', async () => {
    mock.enqueue({ status: 200, headersAfter: Infinity });
    const ac = new AbortController();
    const p = request(mock.url + '/chat/completions', { method: 'POST', body: '{}', signal: ac.signal });
    await mock.waitForRequests(1);
    const t0 = performance.now();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(p);
    const req = mock.requests[0]!;
    const closedAt = await mock.waitFor(() => req.closedAt);
    assert.ok(closedAt - t0 >= 90 && closedAt - t0 < 500, `${closedAt - t0}`);
    assert.equal(req.aborted, true);
  });

  test('abortAfterEvents destroys the socket after N events; M sees the close', async () => {
    const writes = Array.from({ length: 50 }, (_, i) => ({ after: i === 0 ? 0 : 20, text: EV(`{"i":${i}}`) }));
    mock.enqueue(sseScript(writes));
    const r = await rawRequest(mock.url + '/chat/completions', { json: { stream: true }, abortAfterEvents: 5 });
    assert.equal(r.aborted, true);
    assert.equal(r.complete, false);
    assert.equal(r.events.length, 5);
    const req = mock.requests[0]!;
    await mock.waitFor(() => req.closedAt);
    assert.equal(req.aborted, true);
  });

  test("'destroy' resets, 'fin' truncates, 'close' framing ends with the socket", async () => {
    mock.enqueue(sseScript([EV('{"a":1}')], { close: 'destroy' }));
    const d = await rawRequest(mock.url + '/s', { json: {} });
    assert.equal(d.complete, false);
    assert.ok(d.error, 'destroy gives a client-side error');
    assert.equal(d.events.length, 1);
    assert.equal(mock.requests[0]!.closedBy, 'mock');
    assert.equal(mock.requests[0]!.aborted, false);

    mock.enqueue(sseScript([EV('{"a":1}')], { close: 'fin' }));
    const f = await rawRequest(mock.url + '/s', { json: {} });
    assert.equal(f.complete, false);
    assert.equal(f.body.toString(), EV('{"a":1}'));

    mock.enqueue(sseScript([EV('{"a":1}'), DONE], { framing: 'close' }));
    const c = await rawRequest(mock.url + '/s', { json: {} });
    assert.equal(c.complete, true);
    assert.equal(c.headers.connection, 'close');
    assert.equal(c.headers['transfer-encoding'], undefined);
    assert.equal(c.chunks.length, 2);
    assert.deepEqual(c.events.map((e) => e.data), ['{"a":1}', '[DONE]']);
  });

  test('queue is FIFO, then the handler; no script → 500; handler undefined → 404', async () => {
    const none = await rawRequest(mock.url + '/a');
    assert.equal(none.status, 500);
    assert.equal((none.json() as { error: { type: string } }).error.type, 'mock_no_script');
    mock.setHandler(modelsHandler());
    mock.enqueue(jsonResponse(201, { q: 1 }), jsonResponse(202, { q: 2 }));
    assert.equal((await rawRequest(mock.url + '/models')).status, 201);
    assert.equal((await rawRequest(mock.url + '/models')).status, 202);
    const m = await rawRequest(mock.url + '/models');
    assert.equal(m.status, 200);
    assert.equal((m.json() as { data: Array<{ id: string }> }).data[0]!.id, 'mock-llm');
    const nf = await rawRequest(mock.url + '/nope');
    assert.equal(nf.status, 404);
    assert.equal(mock.requests.length, 5);
  });

  test('ollama emulation honours max_tokens only', async () => {
    mock.setHandler(ollamaEmulationHandler());
    const capped = await rawRequest(mock.url + '/chat/completions', {
      json: { model: 'llama3', max_tokens: 10, messages: [{ role: 'user', content: 'Count' }] },
    });
    const c = capped.json() as { model: string; choices: Array<{ finish_reason: string; message: { content: string } }>; usage: { completion_tokens: number } };
    assert.equal(c.choices[0]!.finish_reason, 'length');
    assert.equal(c.usage.completion_tokens, 10);
    assert.equal(c.choices[0]!.message.content, '1 2 3 4 5 6 7 8 9 10');
    assert.equal(c.model, 'llama3');

    const ignored = await rawRequest(mock.url + '/chat/completions', {
      json: { model: 'llama3', max_completion_tokens: 10, messages: [{ role: 'user', content: 'Count' }] },
    });
    const i = ignored.json() as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
    assert.equal(i.choices[0]!.finish_reason, 'stop');
    assert.equal(i.usage.completion_tokens, 400);

    mock.setHandler(ollamaEmulationHandler({ ignoreMaxTokens: true }));
    const backstop = await rawRequest(mock.url + '/chat/completions', { json: { max_tokens: 10, max_completion_tokens: 10 } });
    assert.equal((backstop.json() as { usage: { completion_tokens: number } }).usage.completion_tokens, 400);

    mock.setHandler(ollamaEmulationHandler());
    const s = await rawRequest(mock.url + '/chat/completions', {
      json: { stream: true, max_tokens: 3, stream_options: { include_usage: true } },
    });
    const p = eventPayloads(s.events) as Array<{ choices?: Array<{ delta: { content?: string }; finish_reason: string | null }>; usage?: { completion_tokens: number } }>;
    assert.equal(p.length, 6);
    assert.equal(p.slice(0, 3).map((x) => x.choices![0]!.delta.content).join(''), '1 2 3');
    assert.equal(p[3]!.choices![0]!.finish_reason, 'length');
    assert.equal(p[4]!.usage!.completion_tokens, 3);
    assert.equal(p[5], '[DONE]');
  });

  test('mock.close() destroys hanging sockets', async () => {
    const m2 = await startMockUpstream();
    m2.enqueue(sseScript([': x\n\n'], { close: 'hang' }));
    const pending = rawRequest(m2.url + '/h', { json: {} });
    await m2.waitForRequests(1);
    await m2.waitFor(() => m2.requests[0]!.script);
    await m2.close();
    const r = await pending;
    assert.equal(r.complete, false);
    assert.equal(r.aborted, false);
    assert.equal(m2.requests[0]!.closedBy, 'mock');
  });

  test('sse() makes one text write per event', () => {
    assert.deepEqual(sse(['a', 'b']), [{ text: 'a' }, { text: 'b' }]);
    assert.equal(
      CH('"x":1'),
      '{"id":"chatcmpl-T","object":"chat.completion.chunk","created":1700000000,"model":"mock-llm","x":1}',
    );
    assert.equal(EV('{}'), 'data: {}\n\n');
  });
});

describe('raw client SSE parser (WHATWG)', () => {
  test('CASE-03: comments, empty comment, fields without data dispatch nothing', () => {
    const body =
      ': ping - 2026-11-29 00:00:00.000000+00:00\n\n' +
      EV('{"c":"Hello"}') +
      ':\n\n' +
      ': keep-alive\ndata: {"c":" world"}\n\n' +
      'retry: 3000\nid: 42\n\n' +
      EV('{"c":"stop"}') +
      DONE;
    const r = parseSse(body);
    assert.deepEqual(r.events.map((e) => e.data), ['{"c":"Hello"}', '{"c":" world"}', '{"c":"stop"}', '[DONE]']);
    assert.deepEqual(r.comments, [' ping - 2026-11-29 00:00:00.000000+00:00', '', ' keep-alive']);
    assert.equal(r.retry, 3000);
    assert.equal(r.events[2]!.id, '42'); // the last-event-ID buffer persists
    assert.equal(r.events[0]!.id, undefined);
  });

  test('CASE-04: CRLF, bare CR, data without space, CR/LF split across feeds', () => {
    const w = [
      'data:{"a":1}\r\n\r\n',
      'data: {"b":2}\r\r',
      'data:{"c":{},\r',
      '\ndata:"d":3}\r\n\r\n',
      'data:[DONE]\r\n\r\n',
    ];
    const expected = ['{"a":1}', '{"b":2}', '{"c":{},\n"d":3}', '[DONE]'];
    assert.deepEqual(parseSse(w.join('')).events.map((e) => e.data), expected);
    const p = new SseParser();
    const seen: string[] = [];
    for (const part of w) for (const e of p.feed(Buffer.from(part))) seen.push(e.data);
    p.end();
    assert.deepEqual(seen, expected);
    const bytewise = new SseParser();
    for (const b of Buffer.from(w.join(''))) bytewise.feed(Buffer.from([b]));
    bytewise.end();
    assert.deepEqual(bytewise.events.map((e) => e.data), expected);
  });

  test('event types, multi-byte UTF-8 split across feeds, BOM, unterminated last event dropped', () => {
    const text = '\uFEFFevent: error\ndata: {"m":"é☃"}\n\ndata: tail';
    const bytes = Buffer.from(text, 'utf8');
    const p = new SseParser();
    for (const b of bytes) p.feed(Buffer.from([b]));
    p.end();
    assert.deepEqual(p.events, [{ event: 'error', data: '{"m":"é☃"}' }]);
    assert.deepEqual(parseSse('data\n\ndata:\n\n').events, [{ data: '' }, { data: '' }]);
    assert.deepEqual(parseSse('data: x\r').events, []);
    assert.deepEqual(parseSse('data: x\r\r').events, [{ data: 'x' }]);
  });
});
