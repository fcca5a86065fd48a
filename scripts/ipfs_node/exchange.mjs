/**
 * The block exchange of concord-ipfs (issue 23): protocol /concord/blocks/1.0.0, imported by server.mjs
 * (which keeps the Kubo-RPC surface) and, for its wire format only, by the lab's misbehaving peer
 * (scripts/adversaries/lying_peer.mjs).
 *
 * Interface:
 *   createExchange(helia, local, { log, debug }) -> exchange
 *     exchange.start()           handle EXCHANGE requests from peers (serve blocks, HAVE notices)
 *     exchange.fetch(cid, signal) -> Promise<Uint8Array>  the block from the peers (the fetch rule
 *                                below), checked against its CID, stored in helia.blockstore; until
 *                                `signal` ends (then it rejects with the signal's reason)
 *     exchange.stored(cid)       this node now holds `cid` (block/put, add): peers that asked are told HAVE
 *     exchange.stats             counters for bitswap/stat (what moved, failures, bad peers)
 *     exchange.stop()            ends every fetch and the timers; the node stops libp2p after
 *   the wire: EXCHANGE, OP_*, encodeMessage, decodeMessage, readAll, sendAll, request, and the bounds
 *   (MAX_BLOCK_BYTES, MAX_REQUEST_BYTES, MAX_ENTRIES, GET_TIMEOUT_MS, PENALTY_MS, ...).
 *   helpers shared with server.mjs: collectBlock, mhKey.
 */

import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'

export const MAX_BLOCK_BYTES = 2 * 1024 * 1024 // Kubo's block size limit; bitswap messages cap at 4 MiB

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
 * block (a HAVE it repeats does not bring it back: each holder is asked at most once per want) and
 * the next one is asked. A fault (a block that does not hash to its CID, a malformed answer or one
 * over 1 + MAX_BLOCK_BYTES, no block within GET_TIMEOUT_MS) is counted per peer (bitswap/stat
 * ConcordBadPeers), logged, and penalizes the peer for PENALTY_MS: it is asked only for blocks no
 * other connected peer claims, and then only once the other peers asked have answered WANT_HAVE
 * (at most PENALIZED_WAIT_MS: a liar answers first). A GET runs on its own clock: a fetch that ends
 * first (a client timeout under GET_TIMEOUT_MS) leaves it running, so a staller is still penalized
 * and the retry asks another holder; a late block is stored (or counted a duplicate). A GET holds
 * its seed slot at most SEED_SLOT_MS, so a stalling seed does not keep the other seeds from being
 * asked. With no holder heard within FALLBACK_MS the block is also wanted through bitswap
 * (want-block to all), which finds blocks held by peers that do not speak EXCHANGE; the first copy
 * wins.
 * The prefetcher wants a node's children in random order, so peers fetching one file at once hold
 * different blocks early and trade them. Measured (bench network, 8 trainers, 50 MB, load ~17):
 * 1.07 copies per trainer, the validators 30% of the bytes, 1.56x one link (bitswap alone: 5.3
 * copies, 56%, 6.0x). The attacks on this rule (a wrong block, a holder that says HAVE and never
 * sends, an oversized answer) are in docs/SECURITY.md and played by scripts/adversaries/lying_peer.mjs
 * (tests/test_exchange_attacks.py): a staller costs a fetch at most GET_TIMEOUT_MS per block it is
 * asked for, then the next holder; a wrong or oversized block costs one transfer.
 */
export const EXCHANGE = '/concord/blocks/1.0.0'
export const OP_WANT_HAVE = 1
export const OP_HAVE = 2
export const OP_GET = 3
export const MAX_PER_PEER = 3 // GETs from this node in flight to one peer
export const SEED_SLOTS = 1 // GETs in flight to seeds while some connected peer is fetching
export const SEED_SLOT_MS = 2_000 // a GET to a seed holds its slot at most this long (it runs on after)
export const FETCHING_WINDOW_MS = 10_000 // a peer that asked us for a block this recently is fetching
export const GET_TIMEOUT_MS = 15_000 // a holder that has not delivered one block by then is skipped for it
export const PENALTY_MS = 30_000 // ... and ranked last for this long
export const PENALIZED_WAIT_MS = 1_000 // a penalized holder waits this long for the others' WANT_HAVE answers
export const FALLBACK_MS = 5_000 // no holder heard by then: bitswap's want-block to all as well
export const REASK_MS = 1_000 // WANT_HAVE to peers that connected since, this often
export const TICK_MS = 250
export const NOTICE_DELAY_MS = 5 // HAVE notices and WANT_HAVEs to one peer are batched this long
export const MAX_REQUEST_BYTES = 256 * 1024
export const MAX_ENTRIES = 4096 // CIDs per message
export const MAX_REMEMBERED_WANTS = 4096 // per peer
export const WANT_TTL_MS = 60_000
export const MAX_INBOUND_STREAMS = 64 // EXCHANGE streams one peer may hold open on one connection
export const REQUEST_READ_MS = 10_000 // a request must arrive whole within this
export const SHA2_256 = 0x12
export const MAX_BAD_PEERS = 1024 // peers whose faults bitswap/stat lists (the oldest is dropped)


export function encodeMessage (op, cids) {
  const parts = [Uint8Array.of(op)]
  for (const cid of cids) {
    const bytes = cid.bytes
    parts.push(Uint8Array.of(bytes.length >> 8, bytes.length & 0xff), bytes)
  }
  return Buffer.concat(parts)
}

export function decodeMessage (buf) {
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

/** An answer over its bound: the peer broke the protocol (a GET's answer is at most 1 + MAX_BLOCK_BYTES). */
export class OversizeError extends Error {
  constructor (limit) {
    super(`message over ${limit} bytes`)
    this.limit = limit
  }
}

/**
 * The whole of what the other end sends until it closes its write end; more than `limit` bytes aborts.
 * Events, not the stream's async iterator: the iterator ends on 'remoteCloseWrite', which has already
 * fired (and is never fired again) when the other end wrote and closed before we started reading, so
 * it would then wait forever. 'end' fires once the read buffer is empty after the remote's close, and
 * `readableEnded` says whether that already happened.
 */
export function readAll (stream, limit) {
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
      else resolve(Buffer.concat(parts))
    }
    const onMessage = evt => {
      const bytes = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()
      size += bytes.length
      if (size > limit) {
        // settle first: abort() dispatches 'close' at once, whose handler would otherwise resolve with
        // what was read so far (it did: an oversized answer came back as a block cut to its limit)
        const err = new OversizeError(limit)
        done(err)
        stream.abort(err)
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

export async function sendAll (stream, bytes, signal) {
  if (!stream.send(bytes)) await stream.onDrain({ signal })
  await stream.close({ signal })
}

/** One request on a fresh EXCHANGE stream to `peer`; its answer (up to `limit` bytes). */
export async function request (libp2p, peer, message, limit, signal) {
  const stream = await libp2p.dialProtocol(peer, EXCHANGE, { signal })
  const onAbort = () => stream.abort(signal.reason ?? new Error('aborted'))
  signal.addEventListener('abort', onAbort, { once: true })
  try {
    await sendAll(stream, message, signal)
    const answer = await readAll(stream, limit)
    signal.throwIfAborted() // aborted while reading: what was read is no answer (readAll resolves on close)
    return answer
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

function sameDigest (a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

export function createExchange (helia, local, { log, debug = false }) {
  const libp2p = helia.libp2p
  const wants = new Map() // multihash key -> want (below)
  const load = new Map() // peer -> GETs from us in flight
  let seedLoad = 0
  const fetchingAt = new Map() // peer -> when it last asked us for a block
  const remembered = new Map() // peer -> Map<key, {cid, at}>: its wants we answered 0 to
  const penalized = new Map() // peer -> until when it ranks last
  const outbox = new Map() // peer -> {peerId, op, cids}: batched WANT_HAVEs and HAVEs
  const pending = new Map() // multihash key -> Set<peer>: GETs in flight for that block
  const badPeers = new Map() // peer -> {badBlocks, badAnswers, timeouts}: its faults (bitswap/stat)
  // what moved (bitswap/stat): blocks served to GETs and received by GET or the bitswap fallback
  const stats = { blocksSent: 0, dataSent: 0, blocksReceived: 0, dataReceived: 0, dupReceived: 0, dupData: 0, fallbacks: 0, getFailures: 0, badPeers }
  const halt = new AbortController() // stop(): ends every GET in flight
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
      for (const cid of msg.cids) addHolder(wants.get(mhKey(cid)), peer, peerId)
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
          const w = wants.get(mhKey(cids[j]))
          w?.waiting.delete(peer)
          if (answer[j] === 1) addHolder(w, peer, box.peerId)
        }
        schedule()
      }).catch(err => {
        // a peer without EXCHANGE (Kubo, bitswap only) or gone: bitswap's fallback finds its blocks
        if (debug) log(`${box.op === OP_HAVE ? 'HAVE' : 'WANT_HAVE'} to ${peer}: ${err.message}`)
        if (box.op !== OP_WANT_HAVE) return
        for (const cid of cids) wants.get(mhKey(cid))?.waiting.delete(peer)
        schedule()
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
        waiting: new Set(), // peers asked WANT_HAVE that have not answered yet
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

  /**
   * `peer` says it holds `w`'s block (WANT_HAVE answered 1, or HAVE). A peer already tried for this
   * block (it answered 0, a bad block or nothing) is not taken back: a liar cannot re-enter the list by
   * repeating HAVE, so each holder is asked at most once per want.
   */
  function addHolder (w, peer, peerId) {
    if (w == null || w.done || w.tried.has(peer)) return
    w.holders.set(peer, peerId)
  }

  /** WANT_HAVE for `w` to every connected peer not asked yet. */
  function ask (w) {
    for (const [peer, peerId] of connectedPeers()) {
      if (w.asked.has(peer)) continue
      w.asked.add(peer)
      w.waiting.add(peer)
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
      // ... and not before the other peers asked have answered (at most PENALIZED_WAIT_MS): a penalized
      // liar answers WANT_HAVE first, and would otherwise be asked before the honest answers arrive
      if (!honest && now - w.since < PENALIZED_WAIT_MS) {
        let unanswered = false
        for (const peer of w.waiting) if (peers.has(peer) && !isPenalized(peer)) { unanswered = true; break }
        if (unanswered) continue
      }
      const shared = othersWant(w.key)
      let best = null
      let bestRank = Infinity
      const inFlight = pending.get(w.key) // GETs for this block left by an ended fetch: not asked twice
      for (const [peer, peerId] of w.holders) {
        if (!peers.has(peer) || (load.get(peer) ?? 0) >= MAX_PER_PEER || inFlight?.has(peer)) continue
        if (honest && isPenalized(peer)) continue
        const seed = !isFetching(peer, now)
        if (seed && shared && seedLoad >= SEED_SLOTS) continue
        const rank = (seed ? 1e6 : 0) + (load.get(peer) ?? 0) * 10 + Math.random()
        if (rank < bestRank) { best = { peer, peerId, seed }; bestRank = rank }
      }
      if (best != null) get(w, best)
    }
  }

  /**
   * A fault of `peer` (what: badBlocks, badAnswers or timeouts): counted for bitswap/stat
   * (ConcordBadPeers), logged, and the peer ranks last for PENALTY_MS (asked only for blocks that no
   * other connected peer claims).
   */
  function penalize (peer, what, cid, reason) {
    let counts = badPeers.get(peer)
    if (counts == null) {
      if (badPeers.size >= MAX_BAD_PEERS) badPeers.delete(badPeers.keys().next().value) // the oldest
      badPeers.set(peer, (counts = { badBlocks: 0, badAnswers: 0, timeouts: 0 }))
    }
    counts[what]++
    const now = Date.now()
    if (penalized.size >= MAX_BAD_PEERS) for (const [p, until] of penalized) if (until <= now) penalized.delete(p)
    penalized.set(peer, now + PENALTY_MS)
    log(`exchange: peer ${peer} ${reason} for ${cid}: ranked last for ${PENALTY_MS / 1000} s`)
  }

  /**
   * GET `w`'s block from one holder. The GET runs on its own clock (GET_TIMEOUT_MS), not the want's: a
   * fetch that ends first (its client's timeout is shorter, or it gave up) leaves it running, so a
   * holder that stalls is still caught by the timeout and penalized, a retry meanwhile asks another
   * holder (pending), and a block that arrives late is stored and ends whichever want is open for it.
   * Only the node stopping ends it early: a block that came meanwhile by another path (the retry's
   * holder, the bitswap fallback) makes its answer a duplicate (DupBlksReceived), not its end, so a
   * holder that stalls is penalized whoever else delivered.
   */
  function get (w, { peer, peerId, seed }) {
    const { cid, key } = w
    w.active = peer
    w.holders.delete(peer)
    w.tried.add(peer)
    load.set(peer, (load.get(peer) ?? 0) + 1)
    // A seed slot is held while the block comes, at most SEED_SLOT_MS (an honest seed sends a block in
    // well under that): a holder that stalls (or drips) does not keep the other seeds from being asked.
    let seedSlot = seed
    const releaseSeed = () => {
      if (!seedSlot) return
      seedSlot = false
      seedLoad--
      schedule()
    }
    if (seed) seedLoad++
    const seedTimer = seed ? setTimeout(releaseSeed, SEED_SLOT_MS) : null
    let forKey = pending.get(key)
    if (forKey == null) pending.set(key, (forKey = new Set()))
    forKey.add(peer)
    const timeout = AbortSignal.timeout(GET_TIMEOUT_MS)
    const signal = AbortSignal.any([halt.signal, timeout])
    let fault = null // what the answer did wrong: 'badBlocks' (not the CID's bytes) or 'badAnswers'
    request(libp2p, peerId, encodeMessage(OP_GET, [cid]), 1 + MAX_BLOCK_BYTES, signal).then(async answer => {
      if (answer.length === 1 && answer[0] === 0) throw new Error('not held')
      if (answer.length < 1 || answer[0] !== 1) {
        fault = 'badAnswers'
        throw new Error(`sent a malformed answer (${answer.length} bytes)`)
      }
      const block = new Uint8Array(answer.buffer, answer.byteOffset + 1, answer.length - 1)
      const digest = await sha256.digest(block)
      if (!sameDigest(digest.digest, cid.multihash.digest)) {
        fault = 'badBlocks'
        throw new Error(`sent ${block.length} bytes that do not hash to the CID`)
      }
      if (await local.has(cid)) { // another GET, the bitswap fallback or a block/put was first
        stats.dupReceived++
        stats.dupData += block.length
        return
      }
      stats.blocksReceived++
      stats.dataReceived += block.length
      await helia.blockstore.put(cid, block, { signal: halt.signal })
      stored(cid)
      wants.get(key)?.finish(null, block)
    }).catch(err => {
      if (halt.signal.aborted) return // the node is stopping
      stats.getFailures++
      if (err instanceof OversizeError) penalize(peer, 'badAnswers', cid, `sent an answer over ${err.limit} bytes`)
      else if (fault != null) penalize(peer, fault, cid, err.message)
      else if (timeout.aborted) penalize(peer, 'timeouts', cid, `sent no block within ${GET_TIMEOUT_MS / 1000} s`)
      else if (debug) log(`GET ${cid} from ${peer}: ${err.message}`)
    }).finally(() => {
      load.set(peer, load.get(peer) - 1)
      if (load.get(peer) === 0) load.delete(peer)
      clearTimeout(seedTimer)
      if (seedSlot) {
        seedSlot = false
        seedLoad--
      }
      forKey.delete(peer)
      if (forKey.size === 0 && pending.get(key) === forKey) pending.delete(key)
      if (w.active === peer) w.active = null
      schedule()
    })
  }

  /** Every TICK_MS: ask peers connected since, and the bitswap fallback for blocks nobody claims. */
  const timer = setInterval(() => {
    const now = Date.now()
    for (const w of wants.values()) {
      if (now - w.since >= REASK_MS) ask(w)
      if (!w.fallback && w.active == null && w.holders.size === 0 && now - w.since >= FALLBACK_MS) {
        w.fallback = true
        stats.fallbacks++
        if (debug) log(`fallback to bitswap for ${w.cid}`)
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
          if (debug) log(`EXCHANGE from ${connection.remotePeer}: ${err.message}`)
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
      halt.abort(new Error('node stopping'))
      for (const w of wants.values()) w.finish(new Error('node stopping'))
    }
  }
}

/** A block's bytes from a blockstore's get (chunks) as one Uint8Array. */
export async function collectBlock (chunks) {
  const parts = []
  for await (const chunk of chunks) parts.push(chunk)
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/** A CID's multihash as a map key: CIDv0 and CIDv1 (raw or dag-pb) of the same bytes are one block. */
export function mhKey (cid) {
  return Buffer.from(cid.multihash.bytes).toString('base64')
}
