#!/usr/bin/env node
/**
 * A lying peer for the block exchange (/concord/blocks/1.0.0, scripts/ipfs_node/exchange.mjs): lab only,
 * started by tests/test_exchange_attacks.py against real concord-ipfs daemons. It is not a concord-ipfs
 * node (no API, no blockstore served, no bitswap): a libp2p peer that speaks the exchange's wire
 * format (imported from exchange.mjs, so it cannot drift from what honest peers speak) and lies.
 * Honest code carries no cheat branch: the misbehaviour lives here only.
 *
 * Usage:
 *   node scripts/adversaries/lying_peer.mjs --repo DIR --swarm /ip4/127.0.0.1/tcp/P \
 *        --peer /ip4/127.0.0.1/tcp/Q/p2p/12D3... --mode wrong|stall|oversize|flood
 *
 * What it does in every mode but flood:
 *   - dials every --peer (again every second while not connected);
 *   - answers every WANT_HAVE with "held" for every CID (it holds nothing);
 *   - poses as fetching: it asks the asker WANT_HAVE for the same CIDs, so the asker ranks it before
 *     its seeds (a fetching holder is asked first) and counts those blocks as wanted by another peer
 *     (which limits its GETs to seeds to SEED_SLOTS): the strongest position a liar can take;
 * and answers GET by --mode:
 *   wrong     1 and bytes that do not hash to the CID (the block's size is unknown to it: 64 KiB)
 *   stall     nothing: the stream stays open until the asker gives up
 *   oversize  1 and MAX_BLOCK_BYTES + 64 KiB of bytes (over the largest answer a GET may have)
 * flood: it holds nothing and says so (WANT_HAVE answered 0, GET 0), and sends each --peer, FLOOD_PER_S
 * times a second, FLOOD_STREAMS at a time: requests over MAX_REQUEST_BYTES, WANT_HAVEs and HAVEs of
 * MAX_ENTRIES random CIDs (blocks nobody has; new ones every second); it logs "lying-peer: flooded N" every second.
 *
 * Logs (stderr, one line each): "lying-peer: listening <multiaddr with /p2p/id>" once ready, then
 * "lying-peer: GET <cid> from <peer>: <mode>" per GET it lied to, which the tests count.
 * SIGTERM or SIGINT stops it (exit 0).
 */

import '../ipfs_node/node20.mjs' // first: Promise.withResolvers before Helia's modules load

import { randomBytes } from 'node:crypto'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withLibp2pLight } from '@helia/libp2p'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { FsBlockstore } from 'blockstore-fs'
import { FsDatastore } from 'datastore-fs'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'

import {
  EXCHANGE,
  MAX_BLOCK_BYTES,
  MAX_ENTRIES,
  MAX_REQUEST_BYTES,
  OP_GET,
  OP_HAVE,
  OP_WANT_HAVE,
  decodeMessage,
  encodeMessage,
  readAll,
  request,
  sendAll
} from '../ipfs_node/exchange.mjs'

const MODES = ['wrong', 'stall', 'oversize', 'flood']
const FLOOD_PER_S = 40 // messages a second to each victim: a flood, but not one that takes a core from the machine
const FLOOD_STREAMS = 16
const WRONG_BYTES = 64 * 1024
const REDIAL_MS = 1_000
const SEND_TIMEOUT_MS = 30_000

function log (msg) {
  process.stderr.write(`${new Date().toISOString()} lying-peer: ${msg}\n`)
}

function parseCli (argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      repo: { type: 'string' },
      swarm: { type: 'string', default: '/ip4/127.0.0.1/tcp/0' },
      peer: { type: 'string', multiple: true, default: [] },
      mode: { type: 'string' }
    },
    strict: true
  })
  if (values.repo == null) throw new Error('--repo DIR is required')
  if (!MODES.includes(values.mode)) throw new Error(`--mode ${values.mode}: expected one of ${MODES.join(', ')}`)
  return values
}

/** MAX_ENTRIES CIDs of random bytes: blocks nobody holds. */
async function randomCids () {
  const cids = []
  for (let i = 0; i < MAX_ENTRIES; i++) cids.push(CID.createV1(0x55, await sha256.digest(randomBytes(8))))
  return cids
}

/** flood mode: FLOOD_PER_S messages a second to every target, FLOOD_STREAMS at most in flight. */
async function flood (libp2p, targets) {
  const oversized = Buffer.concat([Uint8Array.of(OP_HAVE), randomBytes(MAX_REQUEST_BYTES)]) // over the request bound
  let wantHave = encodeMessage(OP_WANT_HAVE, await randomCids())
  let have = encodeMessage(OP_HAVE, await randomCids())
  const renew = setInterval(async () => { // fresh CIDs: the victim's bound on remembered wants is what holds
    wantHave = encodeMessage(OP_WANT_HAVE, await randomCids())
    have = encodeMessage(OP_HAVE, await randomCids())
  }, 1000)
  let sent = 0
  let inFlight = 0
  let turn = 0
  const send = () => {
    for (const ma of targets) {
      if (inFlight >= FLOOD_STREAMS) return
      const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      const conn = libp2p.getConnections().find(c => c.remotePeer.toString() === id)
      if (conn == null) continue
      const message = [oversized, wantHave, have][turn++ % 3]
      inFlight++
      request(libp2p, conn.remotePeer, message, MAX_ENTRIES, AbortSignal.timeout(SEND_TIMEOUT_MS))
        .then(() => { sent++ }, () => { sent++ }) // refused or not, it was sent
        .finally(() => { inFlight-- })
    }
  }
  const sender = setInterval(send, 1000 / FLOOD_PER_S)
  const reporter = setInterval(() => log(`flooded ${sent}`), 1000)
  return () => { clearInterval(sender); clearInterval(reporter); clearInterval(renew) }
}

async function main () {
  const cli = parseCli(process.argv.slice(2))
  await mkdir(cli.repo, { recursive: true })
  const blockstore = new FsBlockstore(join(cli.repo, 'blocks'))
  const datastore = new FsDatastore(join(cli.repo, 'datastore'))
  await blockstore.open()
  await datastore.open()
  const helia = withLibp2pLight(createHeliaLight({ blockstore, datastore }), {
    addresses: { listen: [cli.swarm] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery: [],
    services: { identify: identify() }
  })
  await helia.start()
  const libp2p = helia.libp2p
  const stalled = new Set() // streams held open (stall): kept referenced until the asker resets them

  await libp2p.handle(EXCHANGE, (stream, connection) => {
    const peer = connection.remotePeer
    answer(stream, peer).catch(err => {
      if (stream.status === 'open') stream.abort(err)
    })
  }, { maxInboundStreams: 1024, maxOutboundStreams: 1024 })

  async function answer (stream, peer) {
    const msg = decodeMessage(await readAll(stream, MAX_REQUEST_BYTES))
    if (cli.mode === 'flood') {
      // holds nothing, says so: its weight is in what it sends (flood() below)
      const answer = msg.op === OP_WANT_HAVE ? new Uint8Array(msg.cids.length) : msg.op === OP_GET ? Uint8Array.of(0) : null
      if (answer == null) await stream.close()
      else await sendAll(stream, answer, AbortSignal.timeout(SEND_TIMEOUT_MS))
    } else if (msg.op === OP_WANT_HAVE) {
      await sendAll(stream, new Uint8Array(msg.cids.length).fill(1), AbortSignal.timeout(SEND_TIMEOUT_MS))
      // pose as fetching: want the same blocks back (the asker answers 0 and remembers our want)
      request(libp2p, peer, encodeMessage(OP_WANT_HAVE, msg.cids), msg.cids.length, AbortSignal.timeout(SEND_TIMEOUT_MS))
        .catch(err => log(`WANT_HAVE to ${peer}: ${err.message}`))
    } else if (msg.op === OP_GET && msg.cids.length === 1) {
      log(`GET ${msg.cids[0]} from ${peer}: ${cli.mode}`)
      if (cli.mode === 'wrong') {
        await sendAll(stream, Buffer.concat([Uint8Array.of(1), randomBytes(WRONG_BYTES)]), AbortSignal.timeout(SEND_TIMEOUT_MS))
      } else if (cli.mode === 'oversize') {
        await sendAll(stream, Buffer.concat([Uint8Array.of(1), randomBytes(MAX_BLOCK_BYTES + 64 * 1024)]), AbortSignal.timeout(SEND_TIMEOUT_MS))
      } else {
        stalled.add(stream)
        stream.addEventListener('close', () => stalled.delete(stream), { once: true })
      }
    } else {
      await stream.close() // HAVE: nothing to answer
    }
  }

  // dial the victims, and again while not connected (they may restart)
  const targets = cli.peer.map(p => multiaddr(p))
  const dialing = new Set()
  const redial = () => {
    const connected = new Set(libp2p.getConnections().map(c => c.remotePeer.toString()))
    for (const ma of targets) {
      const id = ma.getComponents().findLast(c => c.name === 'p2p')?.value
      if (connected.has(id) || dialing.has(id)) continue
      dialing.add(id)
      libp2p.dial(ma, { signal: AbortSignal.timeout(REDIAL_MS * 5) })
        .catch(err => log(`dial ${ma}: ${err.message}`))
        .finally(() => dialing.delete(id))
    }
  }
  redial()
  const timer = setInterval(redial, REDIAL_MS)
  const stopFlood = cli.mode === 'flood' ? await flood(libp2p, targets) : () => {}
  log(`listening ${libp2p.getMultiaddrs().map(a => a.toString()).join(' ')} mode ${cli.mode}`)

  let stopping = false
  const stop = async (signal) => {
    if (stopping) process.exit(1)
    stopping = true
    log(`${signal}: stopping`)
    setTimeout(() => process.exit(1), 10_000).unref()
    clearInterval(timer)
    stopFlood()
    for (const s of stalled) s.abort(new Error('stopping'))
    await helia.stop()
    await blockstore.close()
    await datastore.close()
    log('stopped')
    process.exit(0)
  }
  process.on('SIGTERM', () => { stop('SIGTERM').catch(() => process.exit(1)) })
  process.on('SIGINT', () => { stop('SIGINT').catch(() => process.exit(1)) })
}

main().catch(err => {
  log(`failed to start: ${err.stack ?? err}`)
  process.exit(1)
})
