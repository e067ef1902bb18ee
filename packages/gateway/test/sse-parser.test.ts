import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  SseParser,
  encodeItem,
  formatComment,
  formatEvent,
  formatItem,
  type SseComment,
  type SseEvent,
  type SseItem,
} from '../src/sse/index.ts';
import { rng } from './helpers/prng.ts';

const encoder = new TextEncoder();

function bytes(s: string): Uint8Array {
  return encoder.encode(s);
}

function concat(...parts: Array<string | Uint8Array | number[]>): Uint8Array {
  const arrays = parts.map((p) => (typeof p === 'string' ? bytes(p) : Array.isArray(p) ? Uint8Array.from(p) : p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let off = 0;
  for (const a of arrays) {
    out.set(a, off);
    off += a.length;
  }
  return out;
}

function ev(data: string, event?: string, id?: string): SseEvent {
  return { type: 'event', event, data, id };
}

function cm(text: string): SseComment {
  return { type: 'comment', text };
}

/** Feeds every chunk, then end(), collecting everything in order. */
function parseChunks(chunks: Array<string | Uint8Array>, parser = new SseParser()): SseItem[] {
  const items: SseItem[] = [];
  for (const c of chunks) items.push(...parser.push(typeof c === 'string' ? bytes(c) : c));
  items.push(...parser.end());
  return items;
}

function parse(input: string | Uint8Array): SseItem[] {
  return parseChunks([input]);
}

/**
 * A deliberately naive, character-by-character transcription of the WHATWG algorithm, used as an
 * oracle (same per-event `id` and empty-`event` conventions as the parser under test).
 */
function reference(input: Uint8Array): SseItem[] {
  let text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(input);
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const items: SseItem[] = [];
  let data = '';
  let type = '';
  let id: string | undefined;
  const processLine = (line: string): void => {
    if (line === '') {
      if (data === '') {
        type = '';
        id = undefined;
        return;
      }
      if (data.endsWith('\n')) data = data.slice(0, -1);
      items.push(ev(data, type === '' ? undefined : type, id));
      data = '';
      type = '';
      id = undefined;
      return;
    }
    if (line[0] === ':') {
      items.push(cm(line.slice(1)));
      return;
    }
    let field = line;
    let value = '';
    const colon = line.indexOf(':');
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
    }
    if (field === 'data') data += value + '\n';
    else if (field === 'event') type = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
  };
  let line = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '\r' || ch === '\n') {
      processLine(line);
      line = '';
      if (ch === '\r' && text[i + 1] === '\n') i++;
    } else {
      line += ch;
    }
  }
  return items; // the unterminated last line and any incomplete event are discarded
}


// A realistic stream: BOM, a provider keep-alive comment, OpenAI chunks with multi-byte UTF-8
// (2-, 3- and 4-byte sequences), an error event with CRLF endings and multi-line data, fields that
// dispatch nothing with bare CR endings, and the final [DONE].
const STREAM =
  '\uFEFF: OPENROUTER PROCESSING\n\n' +
  'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n' +
  'data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"héllo 世界 🙂"}}]}\n\n' +
  ': ping - 2026-01-01T00:00:00Z\n' +
  'event: error\r\nid: 7\r\ndata: {"error":\r\ndata:  {"message":"a:b"}}\r\n\r\n' +
  'retry: 3000\rid: 42\r\r' +
  'data:{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n' +
  'data: [DONE]\n\n';

const STREAM_ITEMS: SseItem[] = [
  cm(' OPENROUTER PROCESSING'),
  ev('{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'),
  ev('{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"héllo 世界 🙂"}}]}'),
  cm(' ping - 2026-01-01T00:00:00Z'),
  ev('{"error":\n {"message":"a:b"}}', 'error', '7'),
  ev('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}'),
  ev('[DONE]'),
];

describe('SseParser: chunking', () => {
  const whole = bytes(STREAM);

  it('parses a single event', () => {
    assert.deepEqual(parse('data: hello\n\n'), [ev('hello')]);
  });

  it('parses multiple events in one chunk', () => {
    assert.deepEqual(parse('data: a\n\ndata: b\n\nevent: x\ndata: c\n\n'), [ev('a'), ev('b'), ev('c', 'x')]);
  });

  it('parses the realistic stream in one chunk, and agrees with the reference', () => {
    assert.deepEqual(parse(whole), STREAM_ITEMS);
    assert.deepEqual(reference(whole), STREAM_ITEMS);
  });

  it('gives the same items for a split at every byte position', () => {
    for (let i = 0; i <= whole.length; i++) {
      assert.deepEqual(parseChunks([whole.subarray(0, i), whole.subarray(i)]), STREAM_ITEMS, `split at ${i}`);
    }
  });

  it('gives the same items for every pair of split points (three chunks)', () => {
    for (let i = 0; i <= whole.length; i++) {
      for (let j = i; j <= whole.length; j++) {
        const got = parseChunks([whole.subarray(0, i), whole.subarray(i, j), whole.subarray(j)]);
        assert.deepEqual(got, STREAM_ITEMS, `split at ${i}, ${j}`);
      }
    }
  });

  it('gives the same items when fed one byte per push, returning each item as soon as it completes', () => {
    const p = new SseParser();
    const items: SseItem[] = [];
    let completedAt = -1;
    for (let i = 0; i < whole.length; i++) {
      const got = p.push(whole.subarray(i, i + 1));
      if (got.length > 0 && completedAt === -1) completedAt = i;
      items.push(...got);
    }
    assert.deepEqual(p.end(), []);
    assert.deepEqual(items, STREAM_ITEMS);
    // The first comment is returned by the push of its terminating LF.
    assert.equal(completedAt, bytes('\uFEFF: OPENROUTER PROCESSING\n').length - 1);
  });

  it('returns an empty array for chunks that complete nothing (including empty chunks)', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(new Uint8Array(0)), []);
    assert.deepEqual(p.push(bytes('data: par')), []);
    assert.deepEqual(p.push(bytes('tial\n')), []);
    assert.deepEqual(p.push(bytes('\n')), [ev('partial')]);
  });

  it('reassembles multi-byte characters split across chunks', () => {
    const b = bytes('data: 世🙂é\n\n');
    // split inside the 3-byte, 4-byte and 2-byte sequences
    assert.deepEqual(parseChunks([b.subarray(0, 7), b.subarray(7, 11), b.subarray(11, 14), b.subarray(14)]), [ev('世🙂é')]);
  });

  it('turns invalid UTF-8 into U+FFFD', () => {
    assert.deepEqual(parse(concat('data: ', [0xff, 0x41], '\n\n')), [ev('\uFFFDA')]);
    assert.deepEqual(parseChunks([concat('data: ', [0xe4]), bytes('\n\n')]), [ev('\uFFFD')]);
  });

  it('agrees with the reference on random streams and random chunkings', () => {
    const tokens: Array<string | number[]> = [
      'data', 'data:', 'data: ', 'event:', 'event: ', 'id:', 'id: ', 'retry:', 'retry: 10', ': ', ':',
      'database:', 'Data:', 'x', 'y', ' ', '  ', 'é', '世', '🙂', '\0', '\uFEFF', '[DONE]', '{"a":1}',
      '\r', '\n', '\r\n', '\n\n', '\r\r', '\r\n\r\n', '\n', '\n',
      [0xff], [0xe4, 0xb8], [0xf0, 0x9f],
    ];
    const rand = rng(0x5eed);
    for (let iter = 0; iter < 3000; iter++) {
      const parts: Array<string | number[]> = [];
      const n = 1 + Math.floor(rand() * 40);
      for (let k = 0; k < n; k++) parts.push(tokens[Math.floor(rand() * tokens.length)]!);
      const input = concat(...parts);
      const expected = reference(input);
      const chunks: Uint8Array[] = [];
      for (let pos = 0; pos < input.length; ) {
        const size = rand() < 0.2 ? 0 : 1 + Math.floor(rand() * 8);
        chunks.push(input.subarray(pos, pos + size));
        pos += size;
      }
      assert.deepEqual(parseChunks(chunks), expected, `iteration ${iter}: ${JSON.stringify(new TextDecoder().decode(input))}`);
      assert.deepEqual(parse(input), expected);
    }
  });
});

describe('SseParser: line endings', () => {
  it('accepts CRLF, bare CR and mixed endings', () => {
    assert.deepEqual(parse('data: a\r\ndata: b\r\n\r\n'), [ev('a\nb')]);
    assert.deepEqual(parse('data: a\rdata: b\r\r'), [ev('a\nb')]);
    assert.deepEqual(parse('data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\n\n'), [ev('a\nb\nc'), ev('d')]);
  });

  it('treats CR at the end of a chunk followed by LF at the start of the next as one line ending', () => {
    const items = parseChunks(['data:{"a":1,\r', '\ndata:"b":2}\r\n\r\n']);
    assert.deepEqual(items, [ev('{"a":1,\n"b":2}')]);
  });

  it('keeps pairing the CR with an LF that arrives after empty or incomplete-character chunks', () => {
    assert.deepEqual(parseChunks(['data: a\r', new Uint8Array(0), '\ndata: b\n\n']), [ev('a\nb')]);
    const b = bytes('\ndata: 世\n\n');
    // '\n' arrives first here, then the split character; and the reverse: CR, then half a character.
    assert.deepEqual(parseChunks(['data: a\r', b.subarray(0, 1), b.subarray(1, 9), b.subarray(9)]), [ev('a\n世')]);
    const c = bytes('世\n\n');
    assert.deepEqual(parseChunks(['data: a\r', c.subarray(0, 1), c.subarray(1)]), [ev('a')]);
  });

  it('treats CR at the end of a chunk followed by a non-LF character as a complete line ending', () => {
    assert.deepEqual(parseChunks(['data: a\r', 'data: b\r\r']), [ev('a\nb')]);
    assert.deepEqual(parseChunks(['data: a\r', '\rdata: b\n\n']), [ev('a'), ev('b')]);
  });

  it('treats CR CR as a line ending plus a blank line, and LF CR likewise', () => {
    assert.deepEqual(parse('data: a\r\rdata: b\n\r'), [ev('a'), ev('b')]);
  });
});

describe('SseParser: fields', () => {
  it('removes exactly one space after the colon', () => {
    assert.deepEqual(parse('data:x\n\n'), [ev('x')]);
    assert.deepEqual(parse('data: x\n\n'), [ev('x')]);
    assert.deepEqual(parse('data:  x\n\n'), [ev(' x')]);
    assert.deepEqual(parse('data:\tx\n\n'), [ev('\tx')]);
  });

  it('treats a line without a colon as a field with an empty value', () => {
    assert.deepEqual(parse('data\n\n'), [ev('')]);
    assert.deepEqual(parse('data\ndata\n\n'), [ev('\n')]);
    assert.deepEqual(parse('data:\n\n'), [ev('')]);
    assert.deepEqual(parse('data: \n\n'), [ev('')]);
    assert.deepEqual(parse('data: a\ndata\ndata: b\n\n'), [ev('a\n\nb')]);
  });

  it('splits on the first colon only', () => {
    assert.deepEqual(parse('data: {"a":"b:c","u":"http://x"}\n\n'), [ev('{"a":"b:c","u":"http://x"}')]);
    assert.deepEqual(parse('event: a:b\ndata: :x:\n\n'), [ev(':x:', 'a:b')]);
  });

  it('reads event and id fields, and resets the event type after each blank line', () => {
    assert.deepEqual(parse('event: delta\nid: 1\ndata: a\n\ndata: b\n\n'), [ev('a', 'delta', '1'), ev('b')]);
    assert.deepEqual(parse('event: x\n\ndata: b\n\n'), [ev('b')]);
    assert.deepEqual(parse('event: x\nevent: y\ndata: b\n\n'), [ev('b', 'y')]);
    assert.deepEqual(parse('event: x\nevent:\ndata: b\n\n'), [ev('b')]);
    assert.deepEqual(parse('id\ndata: b\n\n'), [ev('b', undefined, '')]);
  });

  it('ignores id values containing NUL', () => {
    assert.deepEqual(parse('id: a\0b\ndata: x\n\n'), [ev('x')]);
    assert.deepEqual(parse('id: 1\nid: a\0b\ndata: x\n\n'), [ev('x', undefined, '1')]);
  });

  it('ignores unknown and case-mismatched fields', () => {
    assert.deepEqual(parse('database: x\nData: y\nfoo: z\ndat: w\nids: 3\nevents: e\nretry\ndata: ok\n\n'), [ev('ok')]);
  });

  it('dispatches nothing for blocks without data', () => {
    assert.deepEqual(parse('retry: 3000\nid: 42\n\n'), []);
    assert.deepEqual(parse('event: x\n\n\n\n'), []);
    assert.deepEqual(parse('\n\n\r\n'), []);
  });

  it('passes [DONE] through as plain data', () => {
    assert.deepEqual(parse('data: [DONE]\n\n'), [ev('[DONE]')]);
  });

  it('tracks the spec\'s last event ID and retry', () => {
    const p = new SseParser();
    assert.equal(p.lastEventId, '');
    assert.equal(p.retry, undefined);
    p.push(bytes('retry: 3000\nid: 42\n\n'));
    assert.equal(p.lastEventId, '42');
    assert.equal(p.retry, 3000);
    p.push(bytes('retry: 12x\nretry: -1\nretry:\ndata: a\n\n'));
    assert.equal(p.lastEventId, '42', 'sticky across events');
    assert.equal(p.retry, 3000, 'non-digit retry values are ignored');
    p.push(bytes('id: 43\n'));
    assert.equal(p.lastEventId, '42', 'committed only at the blank line');
    p.push(bytes('\n'));
    assert.equal(p.lastEventId, '43');
  });
});

describe('SseParser: comments', () => {
  it('returns comments with everything after the colon', () => {
    assert.deepEqual(parse(': ping - 2026-01-01T00:00:00Z\n'), [cm(' ping - 2026-01-01T00:00:00Z')]);
    assert.deepEqual(parse(':\n'), [cm('')]);
    assert.deepEqual(parse('::x: \r\n'), [cm(':x: ')]);
  });

  it('returns a comment inside an event in order, without disturbing the event', () => {
    assert.deepEqual(parse('event: e\n: keep-alive\ndata: d\n: again\n\n'), [cm(' keep-alive'), cm(' again'), ev('d', 'e')]);
  });

  it('keeps comments and events in stream order', () => {
    assert.deepEqual(parse(': a\ndata: 1\n\n: b\ndata: 2\n\n:c\n'), [cm(' a'), ev('1'), cm(' b'), ev('2'), cm('c')]);
  });
});

describe('SseParser: BOM and end of input', () => {
  it('strips one leading BOM, even when split across chunks', () => {
    assert.deepEqual(parse('\uFEFFdata: a\n\n'), [ev('a')]);
    const b = bytes('\uFEFFdata: a\n\n');
    assert.deepEqual(parseChunks([b.subarray(0, 1), b.subarray(1, 2), b.subarray(2)]), [ev('a')]);
  });

  it('strips the BOM only once, and only at the start', () => {
    assert.deepEqual(parse('\uFEFF\uFEFFdata: a\n\ndata: b\n\n'), [ev('b')]);
    assert.deepEqual(parse('\uFEFFdata: a\n\n\uFEFFdata: b\n\n'), [ev('a')]);
    assert.deepEqual(parse('data: \uFEFFx\n\n'), [ev('\uFEFFx')]);
  });

  it('discards an incomplete event at end()', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(bytes('data: 1\n\ndata: 2\n')), [ev('1')]);
    assert.deepEqual(p.end(), []);
    assert.deepEqual(parse('data: unterminated'), []);
    assert.deepEqual(parse('data: a\r'), []);
  });

  it('returns terminated comments right away, and drops an unterminated one at end()', () => {
    const p = new SseParser();
    assert.deepEqual(p.push(bytes(': done\n: partial')), [cm(' done')]);
    assert.deepEqual(p.end(), []);
  });

  it('can parse a new stream after end(), BOM included', () => {
    const p = new SseParser();
    p.push(bytes('event: x\ndata: lost'));
    p.end();
    assert.deepEqual(parseChunks(['\uFEFFdata: fresh\n\n'], p), [ev('fresh')]);
  });
});

describe('SSE writer', () => {
  it('formats events with fields in the order event, id, data', () => {
    assert.equal(formatEvent({ data: 'x' }), 'data: x\n\n');
    assert.equal(formatEvent({ event: 'error', data: '{"error":{"message":"boom"}}' }), 'event: error\ndata: {"error":{"message":"boom"}}\n\n');
    assert.equal(formatEvent({ event: 'e', id: '1', data: 'a\nb' }), 'event: e\nid: 1\ndata: a\ndata: b\n\n');
    assert.equal(formatEvent({ event: undefined, data: '', id: undefined }), 'data: \n\n');
    assert.equal(formatEvent({ event: '', data: 'x' }), 'data: x\n\n');
  });

  it('cannot be made to inject fields', () => {
    assert.equal(formatEvent({ event: 'a\nid: 9', id: '1\r\n2', data: 'x\r\nevent: evil\rdata: y' }),
      'event: a id: 9\nid: 1  2\ndata: x\ndata: event: evil\ndata: data: y\n\n');
    assert.equal(formatComment(' ping'), ': ping\n\n');
    assert.equal(formatComment('a\r\ndata: x\nb\r'), ':a  data: x b \n\n');
    assert.deepEqual(parse(formatComment('a\ndata: x\n')), [cm('a data: x ')]);
  });

  it('formats any item and encodes it as UTF-8', () => {
    assert.equal(formatItem(ev('d', 'e')), 'event: e\ndata: d\n\n');
    assert.equal(formatItem(cm(' hi')), ': hi\n\n');
    assert.deepEqual(encodeItem(ev('é')), bytes('data: é\n\n'));
  });

  it('round-trips: parse(format(x)) equals x', () => {
    const cases: SseEvent[] = [
      ev('x'),
      ev(''),
      ev('\n'),
      ev(' leading space', ' spaced event'),
      ev('line 1\nline 2\n\nline 4\n', 'multi'),
      ev('{"choices":[{"delta":{"content":"héllo 世界 🙂"}}]}', 'chunk', 'id-1'),
      ev('[DONE]'),
      ev('a:b: c', 'x:y', ''),
      ev(':not a comment\n:nor this'),
    ];
    for (const x of cases) assert.deepEqual(parse(formatEvent(x)), [x], JSON.stringify(x));
    const all = cases.map(formatItem).join('') + formatComment(' ping') + formatComment('');
    assert.deepEqual(parse(all), [...cases, cm(' ping'), cm('')]);
  });

  it('normalises CR and CRLF inside data to LF (SSE cannot carry a CR in data)', () => {
    assert.deepEqual(parse(formatEvent({ data: 'a\r\nb\rc' })), [ev('a\nb\nc')]);
  });
});
