// Benchmark client for the Yjs WebSocket server peer (driven by benchmarks/peers/yjs.py).
//
//   node yjs_client.mjs subscribe --url ws://127.0.0.1:P --room R --subscribers K --changes N [--timeout-s S]
//   node yjs_client.mjs write --url ws://127.0.0.1:P --room R --changes N --interval-ms I [--timeout-s S]
//   node yjs_client.mjs text --url ws://127.0.0.1:P --room R --trace PATH.json.gz --edits K [--timeout-s S]
//
// Run it with the working directory set to the peer's install directory (benchmarks/.peers/yjs): the
// packages (yjs, y-websocket, ws) are loaded from there with createRequire, because an ES module resolves
// bare imports next to its own file and ignores NODE_PATH. Everything goes through one require, so there is
// exactly one copy of yjs in this process (the CommonJS build of each package).
//
// Every doc is a Y.Doc with a y-websocket WebsocketProvider (the stock Yjs client) over the `ws` package.
// Two settings matter for honest numbers:
//   - disableBc: true. Otherwise the providers of one room in one process would also sync through a
//     BroadcastChannel, in memory, bypassing the server entirely.
//   - the awareness (presence) state of every doc is null, so no doc announces itself: with M docs each
//     announcing, the server relays M x M awareness messages at connect and every 15 s after, which is
//     presence traffic, not the document fan-out being measured (our server has no presence either).
//
// Fan-out runs as several processes of this script in one room, coordinated by yjs.py over stdin/stdout
// (one JSON object a line, each with an `event`):
//   - subscribe: K subscriber docs connect (50 at a time) and finish the sync handshake, then the process
//     prints {event: 'ready'}. Each doc records when each change arrives (its Y.Map observer fires);
//     {event: 'complete'} is printed once all K x N have arrived. On a line `stop`, or when stdin closes,
//     it prints {event: 'result'} with every arrival time (-1: never arrived), duplicates and reconnects.
//   - write: one writer doc connects ({event: 'synced'}), makes N changes --interval-ms apart (one
//     transaction each: a Y.Map's `status` = "v<i>" and the send time), prints {event: 'done'} with the
//     send times, then stays connected until stopped the same way and prints {event: 'result'}.
// All times are integer microseconds of process.hrtime.bigint(), which is CLOCK_MONOTONIC on Linux (libuv's
// uv_hrtime), the clock every process on the machine shares and Python's time.monotonic() reads: so an
// arrival in one process minus a send time in another is a latency.
//
// text prints exactly one JSON line on stdout. Every mode exits 1 with a message on stderr on timeout or
// error.

import { createRequire } from 'node:module'
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { performance } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { createInterface } from 'node:readline'

const require = createRequire(join(process.cwd(), 'package.json'))
const Y = require('yjs')
const { WebsocketProvider } = require('y-websocket')
const WebSocket = require('ws')

process.setMaxListeners(0) // every provider adds an 'exit' listener

const CONNECT_BATCH = 50

function fail (message) {
  process.stderr.write(`yjs_client: ${message}\n`)
  process.exit(1)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

let reconnects = 0

/** A doc connected to `room`; resolves once the provider has completed the sync handshake with the server. */
function connectDoc (url, room) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    connect: false,
    disableBc: true,
    WebSocketPolyfill: WebSocket
  })
  provider.awareness.setLocalState(null)
  provider.on('connection-close', () => { reconnects++ })
  const synced = new Promise((resolve) => {
    const onSync = (isSynced) => {
      if (isSynced) {
        provider.off('sync', onSync)
        resolve()
      }
    }
    provider.on('sync', onSync)
  })
  provider.connect()
  return { doc, provider, synced }
}

const round3 = (x) => Math.round(x * 1000) / 1000

/** Integer microseconds of CLOCK_MONOTONIC (what Python's time.monotonic() reads too, on Linux). */
const nowUs = () => Number(process.hrtime.bigint() / 1000n)

function emit (event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

/** Resolves when the parent closes our stdin or writes a line `stop` (or dies: that closes stdin as well). */
function stopSignal () {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin })
    lines.on('line', (line) => { if (line.trim() === 'stop') resolve() })
    lines.on('close', resolve)
  })
}

async function subscribe (opts) {
  const m = Number(opts.subscribers)
  const n = Number(opts.changes)
  if (!(m > 0 && n > 0)) fail('subscribe needs --subscribers > 0 and --changes > 0')
  const stopped = stopSignal()

  const arrivals = Array.from({ length: m }, () => new Float64Array(n).fill(-1))
  let received = 0
  let duplicates = 0
  let unexpected = 0

  const startUs = nowUs()
  const subscribers = []
  for (let first = 0; first < m; first += CONNECT_BATCH) {
    const batch = []
    for (let s = first; s < Math.min(m, first + CONNECT_BATCH); s++) {
      const sub = connectDoc(opts.url, opts.room)
      const status = sub.doc.getMap('delivery')
      const mine = arrivals[s]
      status.observe((event) => {
        const now = nowUs()
        if (!event.keysChanged.has('status')) return
        const value = status.get('status')
        const i = typeof value === 'string' && value.startsWith('v') ? Number(value.slice(1)) : NaN
        if (!(i >= 0 && i < n)) { unexpected++; return }
        if (mine[i] >= 0) { duplicates++; return }
        mine[i] = now
        received++
        if (received === m * n) emit({ event: 'complete' })
      })
      subscribers.push(sub)
      batch.push(sub.synced)
    }
    await Promise.all(batch)
  }
  emit({ event: 'ready', docs: m, start_us: startUs, ready_us: nowUs() })

  await stopped
  return {
    event: 'result',
    arrivals_us: arrivals.map((mine) => Array.from(mine)),
    duplicates,
    unexpected,
    reconnects
  }
}

async function write (opts) {
  const n = Number(opts.changes)
  const intervalMs = Number(opts['interval-ms'])
  if (!(n > 0 && intervalMs >= 0)) fail('write needs --changes > 0 and --interval-ms >= 0')
  const stopped = stopSignal()

  const writer = connectDoc(opts.url, opts.room)
  await writer.synced
  emit({ event: 'synced', synced_us: nowUs() })

  const map = writer.doc.getMap('delivery')
  const sentUs = new Array(n)
  for (let i = 0; i < n; i++) {
    if (i > 0) await sleep(intervalMs)
    const now = nowUs()
    sentUs[i] = now
    // One transaction, one update on the wire: the new status and when the writer made it.
    writer.doc.transact(() => {
      map.set('status', `v${i}`)
      map.set('sent_us', now)
    })
  }
  emit({ event: 'done', sent_us: sentUs })
  // Stay connected until told to stop, so the last updates leave the socket and the room sees no disconnect
  // while the subscribers are still receiving.
  await stopped
  return { event: 'result', reconnects }
}

/** The trace's patches, [pos, deleted, inserted] in code points, first `limit` (0: all). */
function loadTrace (path, limit) {
  const trace = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'))
  const txns = []
  let count = 0
  for (const txn of trace.txns) {
    if (limit && count >= limit) break
    const patches = limit ? txn.patches.slice(0, limit - count) : txn.patches
    txns.push(patches)
    count += patches.length
  }
  return { trace, txns, count }
}

// JS strings (and Y.Text indices) count UTF-16 code units; the trace counts code points. They agree while no
// character outside the Basic Multilingual Plane is involved (automerge-paper is ASCII). Otherwise convert
// every position and length against the current text: correct, but O(document) per edit.
const ASTRAL = /[\uD800-\uDFFF]/

function hasAstral (trace, txns) {
  if (ASTRAL.test(trace.startContent || '') || ASTRAL.test(trace.endContent || '')) return true
  return txns.some((patches) => patches.some((p) => ASTRAL.test(p[2])))
}

/** UTF-16 offset of code point `cp` in `s`. */
function utf16Offset (s, cp) {
  let offset = 0
  for (let k = 0; k < cp && offset < s.length; k++) {
    const c = s.charCodeAt(offset)
    offset += c >= 0xd800 && c <= 0xdbff ? 2 : 1
  }
  return offset
}

function toUtf16 (s, pos, del) {
  const start = utf16Offset(s, pos)
  const end = start + utf16Offset(s.slice(start), del)
  return [start, end - start]
}

async function text (opts) {
  const limit = Number(opts.edits)
  if (!(limit >= 0)) fail('text needs --edits >= 0 (0: the whole trace)')
  const { trace, txns, count } = loadTrace(opts.trace, limit)
  const complete = count === trace.txns.reduce((k, t) => k + t.patches.length, 0)
  const astral = hasAstral(trace, txns)

  // The text the replayed edits must produce: endContent for the whole trace, else computed here.
  let expected
  if (complete) {
    expected = trace.endContent
  } else {
    expected = trace.startContent || ''
    for (const patches of txns) {
      for (const [pos, del, ins] of patches) {
        const [at, len] = astral ? toUtf16(expected, pos, del) : [pos, del]
        expected = expected.slice(0, at) + ins + expected.slice(at + len)
      }
    }
  }

  const subscriber = connectDoc(opts.url, opts.room)
  const writer = connectDoc(opts.url, opts.room)
  await Promise.all([subscriber.synced, writer.synced])
  const wtext = writer.doc.getText('text')
  const stext = subscriber.doc.getText('text')
  if (trace.startContent) {
    wtext.insert(0, trace.startContent)
    await new Promise((resolve) => {
      const check = () => { if (stext.length === wtext.length) { subscriber.doc.off('update', check); resolve() } }
      subscriber.doc.on('update', check)
      check()
    })
  }

  // The subscriber holds the final text once it has integrated every struct the writer made (the writer's
  // clock) and has the same length (deletions do not move the clock); then the strings are compared.
  let writerDone = false
  let finalLength = -1
  let finalClock = -1
  let convergedAt = null
  let converged = null
  const convergedPromise = new Promise((resolve) => { converged = resolve })
  const check = () => {
    if (!writerDone || convergedAt !== null) return
    if (stext.length !== finalLength) return
    if (Y.getState(subscriber.doc.store, writer.doc.clientID) !== finalClock) return
    if (stext.toString() !== wtext.toString()) return
    convergedAt = performance.now()
    converged()
  }
  subscriber.doc.on('afterTransaction', check)

  const t0 = performance.now()
  for (const patches of txns) {
    writer.doc.transact(() => {
      for (const [pos, del, ins] of patches) {
        const [at, len] = astral ? toUtf16(wtext.toString(), pos, del) : [pos, del]
        if (len > 0) wtext.delete(at, len)
        if (ins.length > 0) wtext.insert(at, ins)
      }
    })
  }
  const writerS = (performance.now() - t0) / 1000
  finalLength = wtext.length
  finalClock = Y.getState(writer.doc.store, writer.doc.clientID)
  writerDone = true
  check()
  await convergedPromise
  const convergedS = (convergedAt - t0) / 1000
  const final = wtext.toString()
  return {
    edits: count,
    writer_s: round3(writerS),
    converged_s: round3(convergedS),
    edits_per_s: Math.round(count / convergedS),
    final_equals_end: final === expected,
    subscriber_equals_writer: stext.toString() === final,
    final_length: final.length,
    utf16_conversion: astral,
    reconnects
  }
}

async function main () {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      room: { type: 'string' },
      subscribers: { type: 'string' },
      changes: { type: 'string' },
      'interval-ms': { type: 'string', default: '50' },
      trace: { type: 'string' },
      edits: { type: 'string', default: '0' },
      'timeout-s': { type: 'string', default: '120' }
    }
  })
  const mode = positionals[0]
  if (!values.url || !values.room) fail('--url and --room are required')
  const timeoutS = Number(values['timeout-s'])
  const timer = setTimeout(() => fail(`${mode} did not finish within ${timeoutS} s`), timeoutS * 1000)
  let result
  if (mode === 'subscribe') {
    if (!values.subscribers || !values.changes) fail('subscribe needs --subscribers and --changes')
    result = await subscribe(values)
  } else if (mode === 'write') {
    if (!values.changes) fail('write needs --changes')
    result = await write(values)
  } else if (mode === 'text') {
    if (!values.trace) fail('text needs --trace')
    result = await text(values)
  } else {
    fail(`unknown mode ${JSON.stringify(mode)}: use subscribe, write or text`)
  }
  clearTimeout(timer)
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0))
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)))
