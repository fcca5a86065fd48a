#!/usr/bin/env node
/**
 * concord-ipfs: one IPFS peer per node, a Helia 7 node behind the Kubo-RPC subset that
 * client/content/store.py speaks (issue 23). Lab/devnet side: started by scripts/devnet.py
 * (`start_helia`), one per trainer, validator or initiator.
 *
 * Why not js-ipfs: the pinned js-ipfs 0.66.1 comes up only --offline here (its TCP transport
 * rejects every swarm address), so no byte ever moved between daemons. Helia is the maintained
 * implementation; this file is the small server of ours the issue asks for.
 *
 * Usage:
 *   node scripts/ipfs_node/server.mjs --repo DIR --api /ip4/127.0.0.1/tcp/5001 \
 *        --swarm /ip4/127.0.0.1/tcp/4001 [--peer /ip4/127.0.0.1/tcp/4002/p2p/12D3...]...
 *
 * Storage: blocks in DIR/blocks (blockstore-fs), pins and the peer identity in DIR/datastore
 * (datastore-fs; the Ed25519 key is created on the first start and kept, so a restarted node
 * keeps its peer ID and its peers' --peer lists stay valid).
 *
 * Network: libp2p over TCP only (noise, yamux, identify), listening on --swarm. No MDNS, no DHT,
 * no bootstrap list, no delegated or HTTP routing, no trustless-gateway broker: the node dials
 * only the --peer addresses and what `swarm/connect` names, and redials a --peer it lost every
 * REDIAL_MS. Blocks move by the node's block exchange (exchange(), protocol /concord/blocks/1.0.0):
 * a block the node lacks is asked of every connected peer (WANT_HAVE) and fetched from one holder,
 * peers that are fetching too before the origin, at most MAX_PER_PEER requests to one peer, a holder
 * that does not deliver within GET_TIMEOUT_MS skipped for the next; checked against its CID's hash,
 * stored, then served to others. Bitswap 1.2 stays on: it serves peers that speak only bitswap (Kubo)
 * and is the fallback when no peer claims a block within FALLBACK_MS. Nothing else is ever dialed.
 *
 * API (POST /api/v0/<cmd>?arg=...; errors: HTTP 500 {"Message", "Code": 0, "Type": "error"} as Kubo):
 *   id, version                  who/what this node is (id: ID, Addresses with /p2p/<ID>)
 *   block/put   [format|cid-codec, mhtype, cid-base, pin]  multipart body, one block per file
 *               part; format=raw (the store's legacy option) and cid-codec=raw give CIDv1 raw,
 *               format=v0 dag-pb CIDv0; answers {"Key","Size"} per block
 *   block/get   arg, timeout     the block's bytes; local, else bitswap from the peers until
 *               `timeout` (Go duration, default DEFAULT_TIMEOUT_MS) or until the client hangs up;
 *               a miss answers 500 "... timed out ..." (the store reads it as ContentNotFound)
 *   block/stat  arg, timeout, offline  {"Key","Size"}; fetches the block as block/get does (as Kubo);
 *               offline=true (Kubo's --offline): this node's store only, a miss answers 500 at once
 *               Read-ahead: once a client has a dag-pb node (a file's root), its children are
 *               wanted in the background (prefetcher(): one level, bounded), so the store's
 *               block-by-block read finds the leaves local or on their way; one want per block
 *               at a time (readBlock()); all of a node's children are wanted at once (in random
 *               order), the exchange bounds what is actually requested.
 *   block/rm    arg (repeatable)  delete blocks from this node's store (as Kubo: a pinned root is
 *               refused; a missing block answers an Error line); NDJSON {"Hash","Error"} per arg.
 *               Nothing else uses it but the lab's withholding trainer (scripts/adversaries)
 *   add         [cid-version=1, raw-leaves, chunker=size-N, hash=sha2-256, pin, cid-base,
 *               wrap-with-directory=false]  one file part, streamed through ipfs-unixfs-importer
 *               with the layout js-ipfs 0.66.1 and Kubo use (balanced, 174 links per node,
 *               a single raw leaf reduced to itself), so the same bytes give the same CID
 *               as before; answers one NDJSON line {"Name","Hash","Size"}
 *   pin/add     arg, timeout     recursive pin (fetches missing blocks from peers); {"Pins":[cid]}
 *   pin/ls      [arg], type      {"Keys":{cid:{"Type":"recursive"}}}; an unpinned arg answers
 *               500 "path '<cid>' is not pinned"
 *   swarm/connect arg            dial a peer multiaddr (/p2p/<id> included); {"Strings":[...]}
 *   swarm/peers                  {"Peers":[{"Addr","Peer"}]}
 *   bitswap/stat                 Kubo's field names for what the block exchange moved since start:
 *               BlocksReceived/DataReceived (by GET or the bitswap fallback), BlocksSent/DataSent (to
 *               GETs), DupBlksReceived (a GET's block after the fallback was first), Peers; and
 *               ConcordFallbacks, ConcordGetFailures. Blocks bitswap serves to Kubo peers are not counted
 *
 * Dependencies (package.json, pinned exactly): helia, @helia/libp2p, @helia/bitswap, @libp2p/tcp,
 * @libp2p/identify, @chainsafe/libp2p-noise and -yamux, blockstore-fs, datastore-fs,
 * ipfs-unixfs-importer, multiformats, @multiformats/multiaddr. Helia 7's tree targets Node 22; on
 * the Node 20 here it needs node20.mjs (Promise.withResolvers) and two scoped overrides: undici 7
 * under @libp2p/http (undici 8 needs Node 22.19; `helia` imports it, this server never uses it) and
 * the old mortice 3.0.6 only under `ipfs` (js-ipfs needs it on Node 20; libp2p 3 needs mortice 3.3).
 *
 * Stopping: SIGTERM or SIGINT closes the API (in-flight requests are aborted), stops Helia and
 * libp2p (closing every connection and the blockstore), and exits 0; a second signal, or a stop
 * that takes over STOP_GRACE_MS, exits 1 at once.
 */

import './node20.mjs' // first: Promise.withResolvers before Helia's modules load

import { createServer } from 'node:http'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { FsBlockstore } from 'blockstore-fs'
import { FsDatastore } from 'datastore-fs'
import { createHeliaLight } from 'helia'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { CID } from 'multiformats/cid'
import { base32 } from 'multiformats/bases/base32'
import { base58btc } from 'multiformats/bases/base58'
import { sha256 } from 'multiformats/hashes/sha2'

const DEFAULT_TIMEOUT_MS = 30_000
const MAX_BLOCK_BYTES = 2 * 1024 * 1024 // Kubo's block size limit; bitswap messages cap at 4 MiB
const DEFAULT_CHUNK = 262_144 // Kubo's default chunker (size-262144) when none is given
const MAX_CHUNK = 1024 * 1024 // a leaf is one block: Kubo refuses chunkers above 1 MiB
const MAX_CHILDREN = 174 // Kubo and js-ipfs: links per balanced-layout node
const REDIAL_MS = 2_000
const READ_BUFFER_BYTES = 32 * 1024 * 1024 // per yamux stream, over its 16 MiB maximum window
const PREFETCH_CONCURRENCY = MAX_CHILDREN // children of a requested dag-pb node wanted at once: all of them
const PREFETCH_TIMEOUT_MS = 120_000
const STOP_GRACE_MS = 10_000
const RAW = 0x55
const DAG_PB = 0x70
const CODECS = { raw: RAW, 'dag-pb': DAG_PB, 'dag-cbor': 0x71, 'dag-json': 0x0129 }
const DEBUG = process.env.CONCORD_IPFS_DEBUG === '1' // log every failed exchange request (stderr)

class ApiError extends Error {
  constructor (message, status = 500) {
    super(message)
    this.status = status
  }
}

// ------------------------------------------------------------------------------- arguments

function parseCli (argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      repo: { type: 'string' },
      api: { type: 'string', default: '/ip4/127.0.0.1/tcp/5001' },
      swarm: { type: 'string', default: '/ip4/127.0.0.1/tcp/4001' },
      peer: { type: 'string', multiple: true, default: [] }
    },
    strict: true
  })
  if (values.repo == null) throw new Error('--repo DIR is required')
  const api = /^\/ip4\/([0-9.]+)\/tcp\/(\d+)(\/http)?$/.exec(values.api)
  if (api == null) throw new Error(`--api ${values.api}: expected /ip4/HOST/tcp/PORT`)
  for (const p of values.peer) {
    if (peerIdOf(multiaddr(p)) == null) throw new Error(`--peer ${p}: expected a multiaddr ending in /p2p/<peer id>`)
  }
  return { repo: values.repo, api: { host: api[1], port: Number(api[2]) }, swarm: values.swarm, peers: values.peer }
}

/** The peer ID a multiaddr ends in (/p2p/<id>), or undefined. */
function peerIdOf (ma) {
  return ma.getComponents().findLast(c => c.name === 'p2p')?.value
}

/** A Go duration ("2500ms", "1.5s", "1m30s") in milliseconds; what Kubo's `timeout` option takes. */
export function parseDuration (text) {
  const units = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy
  let total = 0
  let matched = 0
  let m
  while ((m = re.exec(text)) !== null) {
    total += parseFloat(m[1]) * units[m[2]]
    matched = re.lastIndex
  }
  if (text.length === 0 || matched !== text.length) throw new ApiError(`invalid duration ${JSON.stringify(text)}`, 400)
  return total
}

function flag (params, name, dflt) {
  const v = params.get(name)
  if (v == null || v === '') return dflt
  if (v === 'true' || v === '1') return true
  if (v === 'false' || v === '0') return false
  throw new ApiError(`option ${name}: expected true or false, got ${JSON.stringify(v)}`, 400)
}

function cidArg (params) {
  const arg = params.get('arg')
  if (arg == null) throw new ApiError('argument "arg" is required', 400)
  const text = arg.replace(/^\/ipfs\//, '')
  try {
    return CID.parse(text, text.startsWith('z') ? base58btc : undefined)
  } catch (err) {
    throw new ApiError(`invalid CID ${JSON.stringify(arg)}: ${err.message}`, 400)
  }
}

function cidText (cid, params) {
  const base = params.get('cid-base')
  if (cid.version === 0 && (base == null || base === 'base58btc')) return cid.toString()
  if (base == null || base === '' || base === 'base32') return cid.toV1().toString(base32)
  if (base === 'base58btc') return cid.toV1().toString(base58btc)
  throw new ApiError(`cid-base ${base}: only base32 and base58btc are served`, 400)
}

// ------------------------------------------------------------------------------- multipart

/**
 * The file parts of a multipart/form-data body, each as {name, content: AsyncIterable<Uint8Array>},
 * streamed (a 100 MB add is never held in memory). A part must be read to its end before the
 * next one is asked for.
 */
async function * multipartParts (req) {
  const type = req.headers['content-type'] ?? ''
  const found = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(type)
  if (!/^multipart\/form-data/i.test(type) || found == null) {
    throw new ApiError('expected a multipart/form-data body with a boundary', 400)
  }
  const delimiter = Buffer.from(`\r\n--${found[1] ?? found[2]}`)
  const source = req[Symbol.asyncIterator]()
  let buf = Buffer.from('\r\n') // so the first boundary also starts with CRLF
  let done = false
  const more = async () => {
    if (done) return false
    const next = await source.next()
    if (next.done) {
      done = true
      return false
    }
    buf = buf.length === 0 ? next.value : Buffer.concat([buf, next.value])
    return true
  }
  // preamble up to the first delimiter
  for (;;) {
    const at = buf.indexOf(delimiter)
    if (at >= 0) {
      buf = buf.subarray(at + delimiter.length)
      break
    }
    if (!(await more())) throw new ApiError('multipart body without a boundary', 400)
  }
  for (;;) {
    while (buf.length < 2 && (await more()));
    if (buf.subarray(0, 2).toString() === '--') return // closing delimiter
    let end
    while ((end = buf.indexOf('\r\n\r\n')) < 0) {
      if (buf.length > 16384) throw new ApiError('multipart part headers over 16 KiB', 400)
      if (!(await more())) throw new ApiError('multipart body ends inside part headers', 400)
    }
    const headers = buf.subarray(0, end).toString('utf8')
    buf = buf.subarray(end + 4)
    const name = /filename="([^"]*)"/i.exec(headers)?.[1] ?? /name="([^"]*)"/i.exec(headers)?.[1] ?? ''
    let finished = false
    const content = (async function * () {
      for (;;) {
        const at = buf.indexOf(delimiter)
        if (at >= 0) {
          if (at > 0) yield buf.subarray(0, at)
          buf = buf.subarray(at + delimiter.length)
          finished = true
          return
        }
        const keep = delimiter.length - 1 // a delimiter may straddle two chunks
        if (buf.length > keep) {
          const out = buf.subarray(0, buf.length - keep)
          buf = Buffer.from(buf.subarray(buf.length - keep))
          yield out
        }
        if (!(await more())) throw new ApiError('multipart body ends inside a part', 400)
      }
    })()
    yield { name, content }
    if (!finished) for await (const _ of content); // eslint-disable-line no-unused-vars
    // after a delimiter: "\r\n" then the next part, or "--" (the end)
    while (buf.length < 2 && (await more()));
    if (buf.subarray(0, 2).toString() === '\r\n') buf = buf.subarray(2)
  }
}

async function collect (content, limit, what) {
  const chunks = []
  let size = 0
  for await (const chunk of content) {
    size += chunk.length
    if (size > limit) throw new ApiError(`${what} is over ${limit} bytes`, 400)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size)
}

/** Node Buffers as plain Uint8Arrays (the importer's chunker takes pieces of any size). */
async function * bytesOf (content) {
  for await (const chunk of content) yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
}

// ------------------------------------------------------------------------------- the node

async function startNode ({ repo, swarm }) {
  await mkdir(repo, { recursive: true })
  const blockstore = new FsBlockstore(join(repo, 'blocks'))
  const datastore = new FsDatastore(join(repo, 'datastore'))
  await blockstore.open()
  await datastore.open()
  // createHeliaLight: no routers, no block brokers, no HTTP; we add libp2p and bitswap only.
  const helia = withBitswap(
    withLibp2pLight(createHeliaLight({ blockstore, datastore }), {
      addresses: { listen: [swarm] },
      transports: [tcp()],
      connectionEncrypters: [noise()],
      // yamux grows a stream's receive window to 16 MiB but aborts the stream once 4 MiB wait unread
      // (its default read buffer): a provider answering a burst of wants (prefetch) then loses the
      // whole batch, and bitswap does not resend a block for 5 s. The buffer is sized above the window.
      streamMuxers: [yamux({ streamOptions: { maxReadBufferLength: READ_BUFFER_BYTES } })],
      peerDiscovery: [],
      services: { identify: identify() }
    })
    // bitswap's defaults: messages of at most 4 MiB each way (it-length-prefixed's own cap; a
    // larger outgoing limit makes a batch of four 1 MiB blocks fail to encode and vanish)
  )
  await helia.start()
  return { helia, stores: [blockstore, datastore] }
}

async function collectBlock (chunks) {
  const parts = []
  for await (const chunk of chunks) parts.push(chunk)
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/** Network fetches in flight, by multihash: one fetch per block at a time. */
const inflight = new Map()

function mhKey (cid) {
  return Buffer.from(cid.multihash.bytes).toString('base64')
}

/**
 * A block from the store, else from the peers (exchange().fetch), until `signal` ends. Single-flight:
 * a second reader of a block already on its way (a prefetch, another client) waits for that fetch
 * instead of starting its own, so one block is asked of the swarm once.
 */
async function readBlock (node, cid, signal) {
  const key = mhKey(cid)
  for (;;) {
    signal.throwIfAborted()
    let fetch = inflight.get(key)
    if (fetch == null) {
      if (await node.local.has(cid)) return collectBlock(node.local.get(cid, { signal }))
      fetch = inflight.get(key) // another reader may have started one meanwhile
    }
    if (fetch == null) {
      const owner = signal
      fetch = { owner, block: node.exchange.fetch(cid, owner) }
      fetch.block.catch(() => {}).finally(() => { if (inflight.get(key) === fetch) inflight.delete(key) })
      inflight.set(key, fetch)
    }
    try {
      return await raceAbort(fetch.block, signal)
    } catch (err) {
      // the fetch we joined ended with its owner's signal, not ours: start our own
      if (signal.aborted || fetch.owner === signal || !fetch.owner.aborted) throw err
    }
  }
}

function raceAbort (promise, signal) {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

/** An AbortSignal for one request: its `timeout`, and the client hanging up. */
function requestSignal (params, req, res) {
  const t = params.get('timeout')
  const ms = t == null || t === '' ? DEFAULT_TIMEOUT_MS : parseDuration(t)
  const controller = new AbortController()
  const onClose = () => { if (!res.writableFinished) controller.abort(new Error('client hung up')) }
  res.on('close', onClose)
  req.on('aborted', onClose)
  return { signal: AbortSignal.any([controller.signal, AbortSignal.timeout(ms)]), ms }
}

function timedOut (what, cid, ms) {
  return new ApiError(`${what} ${cid}: timed out after ${Math.round(ms)}ms (not in this node's store and no connected peer sent it)`)
}

async function fetchOrTimeout (node, cid, what, params, req, res, prefetch) {
  const { signal, ms } = requestSignal(params, req, res)
  let block
  try {
    block = await readBlock(node, cid, signal)
  } catch (err) {
    if (signal.aborted) throw timedOut(what, cid, ms)
    throw err
  }
  if (cid.code === DAG_PB) prefetch.children(cid, block)
  return block
}

/**
 * Read-ahead for block-by-block readers: when a client asks for a dag-pb node, the node wants its
 * children (the first MAX_CHILDREN links, one level: a prefetched node is not itself expanded) in
 * the background, PREFETCH_CONCURRENCY at a time, each for at most PREFETCH_TIMEOUT_MS. The store
 * reads a file root first and its leaves one by one after, so the leaves are then local (or on
 * their way) when asked for, instead of one bitswap round trip each. Bounded: MAX_CHILDREN blocks
 * of at most 4 MiB (bitswap's message cap) per node a client asked for; a lying node costs that
 * much disk and is still caught by the client's own size and hash checks.
 */
function prefetcher (node, dagPb) {
  const queue = []
  const queued = new Set()
  let running = 0
  let stopped = false
  const pump = () => {
    while (!stopped && running < PREFETCH_CONCURRENCY && queue.length > 0) {
      const cid = queue.shift()
      running++
      readBlock(node, cid, AbortSignal.timeout(PREFETCH_TIMEOUT_MS))
        .catch(() => {}) // a child nobody has: the client's own block/get reports it
        .finally(() => {
          running--
          queued.delete(cid.toString())
          pump()
        })
    }
  }
  return {
    children (cid, block) {
      let links
      try {
        links = dagPb.decode(block).Links
      } catch {
        return // not a dag-pb node after all: the client's parser says so
      }
      // in random order: peers fetching one file at once then hold different blocks early and trade them
      for (const link of shuffled(links.slice(0, MAX_CHILDREN))) {
        const key = link.Hash.toString()
        if (queued.has(key)) continue
        queued.add(key)
        queue.push(link.Hash)
      }
      pump()
    },
    stop () { stopped = true }
  }
}

function shuffled (items) {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

function json (res, obj) {
  res.writeHead(200, { 'Content-Type': 'application/json' })
  res.end(JSON.stringify(obj) + '\n')
}

async function pinRecursive (helia, cid, signal) {
  if (await helia.pins.isPinned(cid, { signal })) return
  for await (const _ of helia.pins.add(cid, { signal })); // eslint-disable-line no-unused-vars
}

function handlers (node, peers, prefetch) {
  const { helia, local } = node
  const libp2p = helia.libp2p
  return {
    id: async (params, req, res) => {
      const id = libp2p.peerId.toString()
      json(res, {
        ID: id,
        PublicKey: '',
        Addresses: libp2p.getMultiaddrs().map(a => a.toString()),
        AgentVersion: `concord-ipfs/${helia.info.name}-${helia.info.version}`,
        ProtocolVersion: 'ipfs/0.1.0',
        Protocols: libp2p.getProtocols()
      })
    },
    version: async (params, req, res) => {
      json(res, { Version: '0.1.0', Commit: '', Repo: '', System: `node/${process.version}`, Golang: '' })
    },
    'block/put': async (params, req, res) => {
      const mhtype = params.get('mhtype') ?? 'sha2-256'
      if (mhtype !== 'sha2-256') throw new ApiError(`mhtype ${mhtype}: only sha2-256 is served`, 400)
      const format = params.get('format')
      const codecName = params.get('cid-codec') ?? (format === 'v0' ? 'dag-pb' : format) ?? 'raw'
      const code = CODECS[codecName]
      if (code == null) throw new ApiError(`codec ${codecName}: expected one of ${Object.keys(CODECS).join(', ')}`, 400)
      const version = format === 'v0' ? 0 : 1
      const pin = flag(params, 'pin', false)
      const out = []
      for await (const part of multipartParts(req)) {
        const block = await collect(part.content, MAX_BLOCK_BYTES, 'block')
        const cid = CID.create(version, code, await sha256.digest(block))
        await helia.blockstore.put(cid, block)
        node.exchange.stored(cid)
        if (pin) await pinRecursive(helia, cid)
        out.push({ Key: cidText(cid, params), Size: block.length })
      }
      if (out.length === 0) throw new ApiError('block/put: no block in the body', 400)
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(out.map(o => JSON.stringify(o)).join('\n') + '\n')
    },
    'block/get': async (params, req, res) => {
      const cid = cidArg(params)
      const block = await fetchOrTimeout(node, cid, 'block/get', params, req, res, prefetch)
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': block.length })
      res.end(block)
    },
    'block/stat': async (params, req, res) => {
      const cid = cidArg(params)
      if (flag(params, 'offline', false) && !(await helia.blockstore.has(cid))) {
        throw new ApiError(`block/stat ${cid}: not in this node's store (offline: no peer asked)`)
      }
      const block = await fetchOrTimeout(node, cid, 'block/stat', params, req, res, prefetch)
      json(res, { Key: cidText(cid, params), Size: block.length })
    },
    'block/rm': async (params, req, res) => {
      const args = params.getAll('arg')
      if (args.length === 0) throw new ApiError('block/rm: argument "cid" is required', 400)
      const lines = []
      for (const text of args) {
        const cid = cidArg(new URLSearchParams({ arg: text }))
        let error = ''
        if (await helia.pins.isPinned(cid)) error = 'pinned: recursive'
        else if (!(await helia.blockstore.has(cid))) error = 'block not found'
        else await local.delete(cid) // the node's own FsBlockstore: Helia's wrapper asks content routers
        lines.push(JSON.stringify({ Hash: cidText(cid, params), Error: error }))
      }
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(lines.join('\n') + '\n')
    },
    add: async (params, req, res) => {
      const cidVersion = Number(params.get('cid-version') ?? '0')
      if (cidVersion !== 1) throw new ApiError('add: only cid-version=1 is served', 400)
      const rawLeaves = flag(params, 'raw-leaves', true)
      const hash = params.get('hash') ?? 'sha2-256'
      if (hash !== 'sha2-256') throw new ApiError(`hash ${hash}: only sha2-256 is served`, 400)
      if (flag(params, 'wrap-with-directory', false)) throw new ApiError('add: wrap-with-directory is not served', 400)
      const chunker = params.get('chunker') ?? `size-${DEFAULT_CHUNK}`
      const size = /^size-(\d+)$/.exec(chunker)
      if (size == null || Number(size[1]) < 1 || Number(size[1]) > MAX_CHUNK) {
        throw new ApiError(`chunker ${chunker}: expected size-N with 1 <= N <= ${MAX_CHUNK}`, 400)
      }
      const pin = flag(params, 'pin', true)
      const out = []
      const storing = { put: async (cid, bytes, options) => { await helia.blockstore.put(cid, bytes, options); node.exchange.stored(cid); return cid } }
      for await (const part of multipartParts(req)) {
        let root = null
        for await (const entry of importer([{ content: bytesOf(part.content) }], storing, {
          cidVersion: 1,
          rawLeaves,
          reduceSingleLeafToSelf: true,
          leafType: 'file',
          chunker: fixedSize({ chunkSize: Number(size[1]) }),
          layout: balanced({ maxChildrenPerNode: MAX_CHILDREN }),
          wrapWithDirectory: false
        })) root = entry
        if (root == null) throw new ApiError('add: nothing imported', 500)
        if (pin) await pinRecursive(helia, root.cid)
        // Size: the DAG's cumulative size, as Kubo gives it (a string)
        out.push({ Name: part.name || cidText(root.cid, params), Hash: cidText(root.cid, params), Size: String(root.size) })
      }
      if (out.length === 0) throw new ApiError('add: no file in the body', 400)
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(out.map(o => JSON.stringify(o)).join('\n') + '\n')
    },
    'pin/add': async (params, req, res) => {
      const cid = cidArg(params)
      const { signal, ms } = requestSignal(params, req, res)
      try {
        await pinRecursive(helia, cid, signal)
      } catch (err) {
        if (signal.aborted) throw timedOut('pin/add', cid, ms)
        throw err
      }
      json(res, { Pins: [cidText(cid, params)] })
    },
    'pin/ls': async (params, req, res) => {
      const type = params.get('type') ?? 'all'
      if (!['all', 'recursive'].includes(type)) throw new ApiError(`pin/ls type ${type}: only recursive pins exist here`, 400)
      const keys = {}
      if (params.get('arg') != null) {
        const cid = cidArg(params)
        if (!(await helia.pins.isPinned(cid))) throw new ApiError(`path '${params.get('arg')}' is not pinned`)
        keys[cidText(cid, params)] = { Type: 'recursive' }
      } else {
        for await (const pin of helia.pins.ls()) keys[cidText(pin.cid, params)] = { Type: 'recursive' }
      }
      json(res, { Keys: keys })
    },
    'swarm/connect': async (params, req, res) => {
      const args = params.getAll('arg')
      if (args.length === 0) throw new ApiError('argument "arg" is required', 400)
      const strings = []
      for (const a of args) {
        const ma = multiaddr(a)
        if (peerIdOf(ma) == null) throw new ApiError(`swarm/connect ${a}: expected a multiaddr ending in /p2p/<peer id>`, 400)
        const { signal } = requestSignal(params, req, res)
        try {
          await libp2p.dial(ma, { signal })
        } catch (err) {
          throw new ApiError(`swarm/connect ${a}: ${err.message}`)
        }
        peers.add(a)
        strings.push(`connect ${peerIdOf(ma)} success`)
      }
      json(res, { Strings: strings })
    },
    'bitswap/stat': async (params, req, res) => {
      // Kubo's field names for what crossed the swarm; Concord* fields: the exchange's own counts
      const st = node.exchange.stats
      json(res, {
        BlocksReceived: st.blocksReceived,
        DataReceived: st.dataReceived,
        BlocksSent: st.blocksSent,
        DataSent: st.dataSent,
        DupBlksReceived: st.dupReceived,
        DupDataReceived: st.dupData,
        Peers: [...new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))],
        ConcordFallbacks: st.fallbacks,
        ConcordGetFailures: st.getFailures
      })
    },
    'swarm/peers': async (params, req, res) => {
      json(res, {
        Peers: libp2p.getConnections().map(c => ({ Addr: c.remoteAddr.toString(), Peer: c.remotePeer.toString() }))
      })
    }
  }
}

// ------------------------------------------------------------------------------- the block exchange

/**
 * How blocks move between concord-ipfs peers (issue 23): one copy per block over the wire, from a
 * holder chosen by the fetcher, peers that are downloading before the origin.
 *
 * Bitswap alone (Helia's want-block to every connected peer) had every holder send every block: with
 * 3 validators and 8 trainers each trainer received 5.4 copies of each block and the validators
 * uploaded 54% of all bytes (scripts/bench/network.py, 7.7x one link). Steering bitswap itself
 * (want-have, then want-block to one holder) stalled at 8 trainers on two behaviours of its engine:
 * Helia announces a block before writing it (a want-have arriving then is answered DONT_HAVE and
 * never HAVE), and a peer asked want-have twice for one block stays silent. So the fetch rule runs
 * over a protocol of ours, EXCHANGE, request/response on one libp2p stream each (yamux over the
 * same TCP connection bitswap uses); bitswap stays on for peers that only speak bitswap (Kubo) and as
 * the fallback below.
 *
 * Messages (one per stream; the requester closes its write end after it, the responder answers and
 * closes): a request is one op byte then entries, each a 2-byte big-endian length and a CID's bytes.
 *   WANT_HAVE cids  -> one byte per CID: 1 held, 0 not. A CID not held is remembered for the asker
 *                      (at most MAX_REMEMBERED_WANTS per peer, for WANT_TTL_MS): once this node stores
 *                      the block it sends the asker HAVE. A peer that asks is "fetching" for
 *                      FETCHING_WINDOW_MS.
 *   HAVE cids       -> nothing: the sender now holds these blocks (it is told only for CIDs we asked).
 *   GET cid         -> 1 and the block's bytes, or 0 (not held). Also marks the asker as fetching.
 * Every answer is read within its bounds (a request <= MAX_REQUEST_BYTES, a block <= MAX_BLOCK_BYTES)
 * and every block is checked against its CID's sha2-256 before it is stored; a peer may hold at most
 * MAX_INBOUND_STREAMS requests open on one connection (libp2p refuses more).
 *
 * The fetch rule (fetcher side, schedule()): a block this node lacks is asked WANT_HAVE of every
 * connected peer (and of peers that connect later, every REASK_MS). Among the holders that answered
 * 1 or sent HAVE, it sends GET to one:
 *   1. never to a peer with MAX_PER_PEER GETs from us in flight (a bound per peer: the load spreads);
 *   2. a fetching holder (a peer downloading too, whose upload is otherwise idle) before a seed (a
 *      holder that asks nothing: the origin, e.g. the validators that published a round model);
 *      for a block another connected peer wants too (it asked us WANT_HAVE and we lacked it), at
 *      most SEED_SLOTS GETs to seeds are in flight, so the origin sends blocks nobody else has and
 *      the fetching peers trade the rest (SHARDCAST-like); a block nobody else wants (one validator
 *      reading one trainer's submission) is asked of a seed like of anyone;
 *   3. fewest GETs from us in flight, then at random.
 * A GET that answers 0, a bad block, or nothing within GET_TIMEOUT_MS drops that holder for that
 * block and the next one is asked; a timeout or a bad block also penalizes the peer for PENALTY_MS:
 * it is asked only for blocks no other connected peer claims. With no holder
 * heard within FALLBACK_MS the block is also wanted through bitswap (want-block to all), which finds
 * blocks held by peers that do not speak EXCHANGE; the first copy wins.
 * The prefetcher wants a node's children in random order, so peers fetching one file at once hold
 * different blocks early and trade them. Measured (bench network, 8 trainers, 50 MB, load ~17):
 * 1.07 copies per trainer, the validators 30% of the bytes, 1.56x one link (bitswap alone: 5.3
 * copies, 56%, 6.0x). The attack on this rule (a holder that says HAVE and never sends) is in the
 * docs: it costs a fetch at most GET_TIMEOUT_MS per block per lying holder, then the next holder.
 */
const EXCHANGE = '/concord/blocks/1.0.0'
const OP_WANT_HAVE = 1
const OP_HAVE = 2
const OP_GET = 3
const MAX_PER_PEER = 3 // GETs from this node in flight to one peer
const SEED_SLOTS = 1 // GETs in flight to seeds while some connected peer is fetching
const FETCHING_WINDOW_MS = 10_000 // a peer that asked us for a block this recently is fetching
const GET_TIMEOUT_MS = 15_000 // a holder that has not delivered one block by then is skipped for it
const PENALTY_MS = 30_000 // ... and ranked last for this long
const FALLBACK_MS = 5_000 // no holder heard by then: bitswap's want-block to all as well
const REASK_MS = 1_000 // WANT_HAVE to peers that connected since, this often
const TICK_MS = 250
const NOTICE_DELAY_MS = 5 // HAVE notices and WANT_HAVEs to one peer are batched this long
const MAX_REQUEST_BYTES = 256 * 1024
const MAX_ENTRIES = 4096 // CIDs per message
const MAX_REMEMBERED_WANTS = 4096 // per peer
const WANT_TTL_MS = 60_000
const MAX_INBOUND_STREAMS = 64 // EXCHANGE streams one peer may hold open on one connection
const REQUEST_READ_MS = 10_000 // a request must arrive whole within this
const SHA2_256 = 0x12

function encodeMessage (op, cids) {
  const parts = [Uint8Array.of(op)]
  for (const cid of cids) {
    const bytes = cid.bytes
    parts.push(Uint8Array.of(bytes.length >> 8, bytes.length & 0xff), bytes)
  }
  return Buffer.concat(parts)
}

function decodeMessage (buf) {
  if (buf.length < 1) throw new Error('empty message')
  const cids = []
  let at = 1
  while (at < buf.length) {
    if (at + 2 > buf.length || cids.length >= MAX_ENTRIES) throw new Error('malformed message')
    const len = (buf[at] << 8) | buf[at + 1]
    if (at + 2 + len > buf.length) throw new Error('malformed message')
    cids.push(CID.decode(buf.subarray(at + 2, at + 2 + len)))
    at += 2 + len
  }
  return { op: buf[0], cids }
}

/**
 * The whole of what the other end sends until it closes its write end; more than `limit` bytes aborts.
 * Events, not the stream's async iterator: the iterator ends on 'remoteCloseWrite', which has already
 * fired (and is never fired again) when the other end wrote and closed before we started reading, so
 * it would then wait forever. 'end' fires once the read buffer is empty after the remote's close, and
 * `readableEnded` says whether that already happened.
 */
function readAll (stream, limit) {
  return new Promise((resolve, reject) => {
    const parts = []
    let size = 0
    let settled = false
    const done = err => {
      if (settled) return
      settled = true
      stream.removeEventListener('message', onMessage)
      stream.removeEventListener('end', onEnd)
      stream.removeEventListener('close', onClose)
      if (err != null) reject(err)
      else resolve(Buffer.concat(parts, size))
    }
    const onMessage = evt => {
      const bytes = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      size += bytes.length
      if (size > limit) {
        const err = new Error(`message over ${limit} bytes`)
        stream.abort(err)
        done(err)
        return
      }
      parts.push(bytes)
    }
    const onEnd = () => done()
    const onClose = evt => done(evt.error ?? (stream.readBufferLength > 0 ? new Error('stream closed with unread bytes') : undefined))
    stream.addEventListener('message', onMessage)
    stream.addEventListener('end', onEnd)
    stream.addEventListener('close', onClose)
    if (stream.readableEnded && stream.readBufferLength === 0) done()
    else if (stream.status !== 'open' && stream.readBufferLength === 0) done(new Error(`stream ${stream.status}`))
  })
}

async function sendAll (stream, bytes, signal) {
  if (!stream.send(bytes)) await stream.onDrain({ signal })
  await stream.close({ signal })
}

/** One request on a fresh EXCHANGE stream to `peer`; its answer (up to `limit` bytes). */
async function request (libp2p, peer, message, limit, signal) {
  const stream = await libp2p.dialProtocol(peer, EXCHANGE, { signal })
  const onAbort = () => stream.abort(signal.reason ?? new Error('aborted'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await sendAll(stream, message, signal)
    return await readAll(stream, limit)
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

function sameDigest (a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function exchange (helia, local) {
  const libp2p = helia.libp2p
  const wants = new Map() // multihash key -> want (below)
  const load = new Map() // peer -> GETs from us in flight
  let seedLoad = 0
  const fetchingAt = new Map() // peer -> when it last asked us for a block
  const remembered = new Map() // peer -> Map<key, {cid, at}>: its wants we answered 0 to
  const penalized = new Map() // peer -> until when it ranks last
  const outbox = new Map() // peer -> {peerId, op, cids}: batched WANT_HAVEs and HAVEs
  // what moved (bitswap/stat): blocks served to GETs and received by GET or the bitswap fallback
  const stats = { blocksSent: 0, dataSent: 0, blocksReceived: 0, dataReceived: 0, dupReceived: 0, dupData: 0, fallbacks: 0, getFailures: 0 }
  let stopped = false

  const isFetching = (p, now) => now - (fetchingAt.get(p) ?? -Infinity) < FETCHING_WINDOW_MS
  const connectedPeers = () => {
    const out = new Map()
    for (const c of libp2p.getConnections()) out.set(c.remotePeer.toString(), c.remotePeer)
    return out
  }

  // ----- serving side
  async function serve (stream, peerId) {
    const peer = peerId.toString()
    const signal = AbortSignal.timeout(REQUEST_READ_MS)
    const onAbort = () => { if (stream.status === 'open') stream.abort(new Error('request not received in time')) }
    signal.addEventListener('abort', onAbort, { once: true })
    let msg
    try {
      msg = decodeMessage(await readAll(stream, MAX_REQUEST_BYTES))
    } finally {
      signal.removeEventListener('abort', onAbort)
    }
    if (msg.op === OP_WANT_HAVE) {
      fetchingAt.set(peer, Date.now())
      const answer = new Uint8Array(msg.cids.length)
      for (let i = 0; i < msg.cids.length; i++) {
        if (await local.has(msg.cids[i])) answer[i] = 1
        else remember(peer, msg.cids[i])
      }
      await sendAll(stream, answer, AbortSignal.timeout(GET_TIMEOUT_MS))
    } else if (msg.op === OP_HAVE) {
      await stream.close()
      const from = peerId
      for (const cid of msg.cids) wants.get(mhKey(cid))?.holders.set(peer, from)
      schedule()
    } else if (msg.op === OP_GET && msg.cids.length === 1) {
      fetchingAt.set(peer, Date.now())
      const cid = msg.cids[0]
      remembered.get(peer)?.delete(mhKey(cid))
      const block = (await local.has(cid)) ? await collectBlock(local.get(cid)) : null
      const out = block == null ? Uint8Array.of(0) : Buffer.concat([Uint8Array.of(1), block])
      await sendAll(stream, out, AbortSignal.timeout(GET_TIMEOUT_MS))
      if (block != null) {
        stats.blocksSent++
        stats.dataSent += block.length
      }
    } else {
      throw new Error(`unknown request op ${msg.op}`)
    }
  }

  function remember (peer, cid) {
    let m = remembered.get(peer)
    if (m == null) remembered.set(peer, (m = new Map()))
    const key = mhKey(cid)
    m.delete(key)
    m.set(key, { cid, at: Date.now() })
    if (m.size > MAX_REMEMBERED_WANTS) m.delete(m.keys().next().value) // the oldest
  }

  /** This node now stores `cid`: tell the peers that asked for it. */
  function stored (cid) {
    const key = mhKey(cid)
    const now = Date.now()
    const peers = connectedPeers()
    for (const [peer, m] of remembered) {
      const w = m.get(key)
      if (w == null) continue
      m.delete(key)
      if (now - w.at < WANT_TTL_MS && peers.has(peer)) enqueue(peers.get(peer), OP_HAVE, cid)
    }
  }

  /** Batch a WANT_HAVE or HAVE for `cid` to `peerId`, sent NOTICE_DELAY_MS later with the others. */
  function enqueue (peerId, op, cid) {
    const slot = `${peerId}/${op}`
    let box = outbox.get(slot)
    if (box == null) {
      box = { peerId, op, cids: [] }
      outbox.set(slot, box)
      setTimeout(() => { outbox.delete(slot); flush(box) }, NOTICE_DELAY_MS)
    }
    box.cids.push(cid)
  }

  function flush (box) {
    if (stopped) return
    const peer = box.peerId.toString()
    for (let i = 0; i < box.cids.length; i += MAX_ENTRIES) {
      const cids = box.cids.slice(i, i + MAX_ENTRIES)
      const signal = AbortSignal.timeout(GET_TIMEOUT_MS)
      request(libp2p, box.peerId, encodeMessage(box.op, cids), MAX_ENTRIES, signal).then(answer => {
        if (box.op !== OP_WANT_HAVE) return
        for (let j = 0; j < cids.length; j++) {
          if (answer[j] === 1) wants.get(mhKey(cids[j]))?.holders.set(peer, box.peerId)
        }
        schedule()
      }).catch(err => {
        // a peer without EXCHANGE (Kubo, bitswap only) or gone: bitswap's fallback finds its blocks
        if (DEBUG) log(`${box.op === OP_HAVE ? 'HAVE' : 'WANT_HAVE'} to ${peer}: ${err.message}`)
      })
    }
  }

  // ----- fetching side

  /** The block `cid` from the peers (module comment above), until `signal` ends. */
  function fetch (cid, signal) {
    if (cid.multihash.code !== SHA2_256) return collectBlock(helia.blockstore.get(cid, { signal }))
    const key = mhKey(cid)
    return new Promise((resolve, reject) => {
      const controller = new AbortController()
      const w = {
        cid,
        key,
        holders: new Map(), // peer -> PeerId: said it holds the block, not yet tried
        tried: new Set(),
        asked: new Set(),
        active: null, // the peer a GET is in flight to
        since: Date.now(),
        fallback: false,
        signal: AbortSignal.any([signal, controller.signal]),
        done: false,
        finish (err, block) {
          if (w.done) return
          w.done = true
          if (wants.get(key) === w) wants.delete(key)
          controller.abort(new Error('fetch ended'))
          if (err != null) reject(err)
          else resolve(block)
        }
      }
      if (signal.aborted) { reject(signal.reason); return }
      signal.addEventListener('abort', () => w.finish(signal.reason), { once: true })
      wants.set(key, w)
      ask(w)
      schedule()
    })
  }

  /** WANT_HAVE for `w` to every connected peer not asked yet. */
  function ask (w) {
    for (const [peer, peerId] of connectedPeers()) {
      if (w.asked.has(peer)) continue
      w.asked.add(peer)
      enqueue(peerId, OP_WANT_HAVE, w.cid)
    }
  }

  function schedule () {
    if (stopped) return
    const now = Date.now()
    const peers = connectedPeers()
    // another connected peer wants this block too (it asked us and we lacked it): it may hold it soon
    const othersWant = key => {
      for (const [peer, m] of remembered) if (peers.has(peer) && m.has(key)) return true
      return false
    }
    const isPenalized = p => (penalized.get(p) ?? 0) > now
    for (const w of wants.values()) {
      if (w.active != null || w.done) continue
      // a penalized holder only when no other connected holder is left for this block (busy or not)
      let honest = false
      for (const peer of w.holders.keys()) if (peers.has(peer) && !isPenalized(peer)) { honest = true; break }
      const shared = othersWant(w.key)
      let best = null
      let bestRank = Infinity
      for (const [peer, peerId] of w.holders) {
        if (!peers.has(peer) || (load.get(peer) ?? 0) >= MAX_PER_PEER) continue
        if (honest && isPenalized(peer)) continue
        const seed = !isFetching(peer, now)
        if (seed && shared && seedLoad >= SEED_SLOTS) continue
        const rank = (seed ? 1e6 : 0) + (load.get(peer) ?? 0) * 10 + Math.random()
        if (rank < bestRank) { best = { peer, peerId, seed }; bestRank = rank }
      }
      if (best != null) get(w, best)
    }
  }

  function get (w, { peer, peerId, seed }) {
    w.active = peer
    w.holders.delete(peer)
    w.tried.add(peer)
    load.set(peer, (load.get(peer) ?? 0) + 1)
    if (seed) seedLoad++
    const timeout = AbortSignal.timeout(GET_TIMEOUT_MS)
    const signal = AbortSignal.any([w.signal, timeout])
    let bad = false
    request(libp2p, peerId, encodeMessage(OP_GET, [w.cid]), 1 + MAX_BLOCK_BYTES, signal).then(async answer => {
      if (answer.length < 1 || answer[0] !== 1) throw new Error('not held')
      const block = new Uint8Array(answer.buffer, answer.byteOffset + 1, answer.length - 1)
      const digest = await sha256.digest(block)
      if (!sameDigest(digest.digest, w.cid.multihash.digest)) {
        bad = true
        throw new Error('block does not match its CID')
      }
      if (w.done) { // the bitswap fallback was first
        stats.dupReceived++
        stats.dupData += block.length
        return
      }
      stats.blocksReceived++
      stats.dataReceived += block.length
      await keep(w, block)
    }).catch(err => {
      if (w.done) return
      stats.getFailures++
      if (timeout.aborted || bad) penalized.set(peer, Date.now() + PENALTY_MS)
      if (DEBUG && !w.done) log(`GET ${w.cid} from ${peer}: ${err.message}`)
    }).finally(() => {
      load.set(peer, load.get(peer) - 1)
      if (load.get(peer) === 0) load.delete(peer)
      if (seed) seedLoad--
      w.active = null
      schedule()
    })
  }

  async function keep (w, block) {
    if (w.done) return
    await helia.blockstore.put(w.cid, block, { signal: w.signal })
    stored(w.cid)
    w.finish(null, block)
  }

  /** Every TICK_MS: ask peers connected since, and the bitswap fallback for blocks nobody claims. */
  const timer = setInterval(() => {
    const now = Date.now()
    for (const w of wants.values()) {
      if (now - w.since >= REASK_MS) ask(w)
      if (!w.fallback && w.active == null && w.holders.size === 0 && now - w.since >= FALLBACK_MS) {
        w.fallback = true
        stats.fallbacks++
        if (DEBUG) log(`fallback to bitswap for ${w.cid}`)
        collectBlock(helia.blockstore.get(w.cid, { signal: w.signal })).then(block => {
          if (w.done) return
          stats.blocksReceived++
          stats.dataReceived += block.length
          stored(w.cid)
          w.finish(null, block)
        }).catch(() => {}) // ended with the fetch's signal
      }
    }
    schedule()
  }, TICK_MS)

  const onDisconnect = evt => {
    const peer = evt.detail.toString()
    remembered.delete(peer)
    fetchingAt.delete(peer)
  }
  libp2p.addEventListener('peer:disconnect', onDisconnect)

  return {
    async start () {
      await libp2p.handle(EXCHANGE, (stream, connection) => {
        serve(stream, connection.remotePeer).catch(err => {
          if (DEBUG) log(`EXCHANGE from ${connection.remotePeer}: ${err.message}`)
          if (stream.status === 'open') stream.abort(err)
        })
      }, { maxInboundStreams: MAX_INBOUND_STREAMS, maxOutboundStreams: MAX_INBOUND_STREAMS * 4 })
    },
    fetch,
    stored,
    stats,
    stop () {
      stopped = true
      clearInterval(timer)
      libp2p.removeEventListener('peer:disconnect', onDisconnect)
      for (const w of wants.values()) w.finish(new Error('node stopping'))
    }
  }
}

// ------------------------------------------------------------------------------- peers

/** Dial every wanted peer we are not connected to; again every REDIAL_MS (peers restart). */
function keepPeers (libp2p, peers) {
  let stopped = false
  const dialing = new Set()
  const tick = () => {
    if (stopped) return
    const connected = new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))
    for (const p of peers) {
      const ma = multiaddr(p)
      const id = peerIdOf(ma)
      if (connected.has(id) || dialing.has(p) || id === libp2p.peerId.toString()) continue
      dialing.add(p)
      libp2p.dial(ma, { signal: AbortSignal.timeout(REDIAL_MS * 2) })
        .catch(err => log(`dial ${p}: ${err.message}`))
        .finally(() => dialing.delete(p))
    }
  }
  tick()
  const timer = setInterval(tick, REDIAL_MS)
  return () => { stopped = true; clearInterval(timer) }
}

function log (msg) {
  process.stderr.write(`${new Date().toISOString()} concord-ipfs: ${msg}\n`)
}

// ------------------------------------------------------------------------------- main

async function main () {
  const cli = parseCli(process.argv.slice(2))
  const { helia, stores } = await startNode(cli)
  const peers = new Set(cli.peers)
  const node = { helia, local: stores[0], exchange: exchange(helia, stores[0]) }
  await node.exchange.start()
  const prefetch = prefetcher(node, await helia.getCodec(DAG_PB))
  const api = handlers(node, peers, prefetch)
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost')
    const cmd = url.pathname.replace(/^\/api\/v0\//, '')
    const handler = url.pathname.startsWith('/api/v0/') ? api[cmd] : undefined
    if (handler == null) {
      res.writeHead(404, { 'Content-Type': 'text/plain' })
      res.end('404 page not found')
      req.resume()
      return
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { 'Content-Type': 'text/plain' })
      res.end(`405 - Method Not Allowed (${req.method}): use POST`)
      req.resume()
      return
    }
    handler(url.searchParams, req, res).catch(err => {
      const status = err instanceof ApiError ? err.status : 500
      if (!(err instanceof ApiError)) log(`${cmd}: ${err.stack ?? err}`)
      if (res.headersSent) {
        res.destroy(err)
        return
      }
      res.writeHead(status, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ Message: err.message, Code: 0, Type: 'error' }) + '\n')
      req.resume()
    })
  })
  server.keepAliveTimeout = 30_000
  server.requestTimeout = 0 // a 100 MB add may take longer than Node's default 300 s
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(cli.api.port, cli.api.host, resolve)
  })
  const stopPeers = keepPeers(helia.libp2p, peers)
  log(`peer ${helia.libp2p.peerId} swarm ${helia.libp2p.getMultiaddrs().join(' ')} api http://${cli.api.host}:${cli.api.port}`)

  let stopping = false
  const stop = async (signal) => {
    if (stopping) {
      log(`${signal} again: exiting now`)
      process.exit(1)
    }
    stopping = true
    log(`${signal}: stopping`)
    setTimeout(() => { log('stop took too long: exiting'); process.exit(1) }, STOP_GRACE_MS).unref()
    stopPeers()
    prefetch.stop()
    node.exchange.stop()
    server.close()
    server.closeAllConnections()
    await helia.stop()
    for (const store of stores) await store.close()
    log('stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => { stop('SIGTERM').catch(err => { log(err.stack); process.exit(1) }) })
  process.on('SIGINT', () => { stop('SIGINT').catch(err => { log(err.stack); process.exit(1) }) })
}

main().catch(err => {
  log(`failed to start: ${err.stack ?? err}`)
  process.exit(1)
})
