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
 * REDIAL_MS. Blocks move by the node's block exchange (exchange.mjs, protocol /concord/blocks/1.0.0):
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
 *               ConcordFallbacks, ConcordGetFailures, and ConcordBadPeers {peer: {BadBlocks, BadAnswers,
               Timeouts}} (exchange.mjs: faults of peers asked GET). Blocks bitswap serves to Kubo peers are not counted
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

import { MAX_BLOCK_BYTES, collectBlock, createExchange, mhKey } from './exchange.mjs'

const DEFAULT_TIMEOUT_MS = 30_000
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

/** Network fetches in flight, by multihash: one fetch per block at a time. */
const inflight = new Map()

/**
 * A block from the store, else from the peers (the exchange's fetch), until `signal` ends. Single-flight:
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
        ConcordGetFailures: st.getFailures,
        // peers whose GET answers were bad blocks, malformed or oversized, or never came (each fault
        // also ranks the peer last for a while: exchange.mjs penalize())
        ConcordBadPeers: Object.fromEntries([...st.badPeers].map(([peer, c]) => [peer, { BadBlocks: c.badBlocks, BadAnswers: c.badAnswers, Timeouts: c.timeouts }]))
      })
    },
    'swarm/peers': async (params, req, res) => {
      json(res, {
        Peers: libp2p.getConnections().map(c => ({ Addr: c.remoteAddr.toString(), Peer: c.remotePeer.toString() }))
      })
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
  const node = { helia, local: stores[0], exchange: createExchange(helia, stores[0], { log, debug: DEBUG }) }
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
