"""ABI-driven encoding of calls and decoding of results and logs for one deployed contract.

The typed bindings in ``client.chain.protocol`` are thin wrappers over this: they name the
function and map the decoded tuples onto dataclasses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from client.chain.rpc import (
    ErrorDecoder,
    PendingTx,
    Receipt,
    Rpc,
    RpcError,
    Signer,
    abi_type,
    revert_data,
    signature,
)


class AbiMismatch(Exception):
    """The ABI has no function or event by that name (bindings and contracts out of step)."""

    def __init__(self, kind: str, name: str, contract: str) -> None:
        super().__init__(f"{contract} ABI has no {kind} {name!r}: rebuild the bindings against contracts/")
        self.kind, self.name, self.contract = kind, name, contract


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Event:
    name: str
    topic0: bytes
    fields: tuple[tuple[str, str, bool], ...]   # (name, type, indexed)


@dataclass(frozen=True)
class RawLog:
    """A log as the node returned it, with block position for ordering."""

    address: str
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    tx_hash: str
    log_index: int

    @staticmethod
    def from_rpc(raw: dict) -> RawLog:
        return RawLog(to_checksum_address(raw["address"]), tuple(bytes.fromhex(t[2:]) for t in raw["topics"]),
                      bytes.fromhex(raw["data"][2:]), int(raw["blockNumber"], 16), raw["transactionHash"],
                      int(raw["logIndex"], 16))


def plain(value: object) -> object:
    """Decoded ABI values with checksummed addresses, recursively through tuples and lists."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, (tuple, list)):
        return type(value)(plain(v) for v in value)
    return value


class Contract:
    """One contract at one address: encode, call, send, and decode its events."""

    def __init__(self, name: str, address: str, abi: Sequence[dict], rpc: Rpc, decoder: ErrorDecoder) -> None:
        self.name = name
        self.address = to_checksum_address(address)
        self.rpc = rpc
        self.decoder = decoder
        self.functions: dict[str, Function] = {}
        self.events: dict[str, Event] = {}
        self.events_by_topic: dict[bytes, Event] = {}
        for entry in abi:
            if entry.get("type") == "function":
                fn = Function(entry["name"], keccak(text=signature(entry))[:4],
                              tuple(abi_type(p) for p in entry.get("inputs", [])),
                              tuple(abi_type(p) for p in entry.get("outputs", [])))
                self.functions[fn.name] = fn  # the protocol has no overloads
            elif entry.get("type") == "event":
                ev = Event(entry["name"], keccak(text=signature(entry)),
                           tuple((p["name"], abi_type(p), bool(p.get("indexed"))) for p in entry["inputs"]))
                self.events[ev.name] = ev
                self.events_by_topic[ev.topic0] = ev

    def function(self, name: str) -> Function:
        if name not in self.functions:
            raise AbiMismatch("function", name, self.name)
        return self.functions[name]

    def encode(self, name: str, *args: object) -> bytes:
        fn = self.function(name)
        return fn.selector + abi_encode(list(fn.inputs), list(args))

    def call(self, name: str, *args: object, block: str | int = "latest", sender: str | None = None) -> tuple:
        """eth_call; returns the decoded output tuple. A revert raises ContractError."""
        fn = self.function(name)
        tx = {"to": self.address, "data": "0x" + self.encode(name, *args).hex()}
        if sender is not None:
            tx["from"] = sender
        tag = hex(block) if isinstance(block, int) else block
        try:
            raw = self.rpc.call("eth_call", tx, tag)
        except RpcError as err:
            data = revert_data(err)
            if data is None:
                raise
            raise self.decoder.decode(data) from None
        return plain(abi_decode(list(fn.outputs), bytes.fromhex(raw[2:])))

    def send(self, signer: Signer, name: str, *args: object, gas: int | None = None) -> PendingTx:
        return signer.send(self.address, self.encode(name, *args), gas=gas)

    def transact(self, signer: Signer, name: str, *args: object, gas: int | None = None) -> Receipt:
        return signer.wait(self.send(signer, name, *args, gas=gas))

    def decode_log(self, log: RawLog) -> tuple[str, dict] | None:
        """(event name, fields) for one of this contract's logs, or None if it is not ours."""
        if log.address != self.address or not log.topics or log.topics[0] not in self.events_by_topic:
            return None
        ev = self.events_by_topic[log.topics[0]]
        indexed = [(n, t) for n, t, i in ev.fields if i]
        unindexed = [(n, t) for n, t, i in ev.fields if not i]
        values: dict[str, object] = {}
        for (n, t), topic in zip(indexed, log.topics[1:]):
            # Dynamic indexed values are stored as their hash; the protocol indexes only value types.
            values[n] = topic if t in ("string", "bytes") or t.endswith("]") else abi_decode([t], topic)[0]
        for (n, _), v in zip(unindexed, abi_decode([t for _, t in unindexed], log.data)):
            values[n] = v
        return ev.name, {n: plain(values[n]) for n, _, _ in ev.fields}

    def get_logs(self, from_block: int, to_block: int | str = "latest", events: Sequence[str] = (),
                 max_range: int = 10_000) -> list[RawLog]:
        """Raw logs of this contract in [from_block, to_block] (optionally only the named events),
        fetched ``max_range`` blocks per request: public RPCs cap the range of eth_getLogs."""
        for e in events:
            if e not in self.events:
                raise AbiMismatch("event", e, self.name)
        last = self.rpc.block_number() if to_block == "latest" else int(to_block)
        topics = [["0x" + self.events[e].topic0.hex() for e in events]] if events else []
        logs: list[RawLog] = []
        start = from_block
        while start <= last:
            end = min(last, start + max_range - 1)
            flt = {"address": self.address, "fromBlock": hex(start), "toBlock": hex(end), "topics": topics}
            logs += [RawLog.from_rpc(r) for r in self.rpc.call("eth_getLogs", flt)]
            start = end + 1
        return logs
