"""One deployed contract over web3: calls, sends through our Signer, and web3-decoded events.

The typed bindings in ``concord.client.chain.protocol`` are thin wrappers over this: they name the
function and map the decoded tuples onto dataclasses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_typing import ABI
from eth_utils.address import to_checksum_address
from web3.contract import Contract as Web3Contract
from web3.contract.contract import ContractEvent
from web3.types import EventData, LogReceipt
from web3.utils import filter_abi_by_type, function_abi_to_4byte_selector, get_abi_input_types, get_abi_output_types

from concord.client.chain.rpc import ChainError, ErrorDecoder, PendingTx, Receipt, Rpc, RpcError, Signer


class AbiMismatch(Exception):
    """The ABI has no function or event by that name (bindings and contracts out of step)."""

    def __init__(self, kind: str, name: str, contract: str) -> None:
        super().__init__(f"{contract} ABI has no {kind} {name!r}: rebuild the bindings against contracts/")
        self.kind, self.name, self.contract = kind, name, contract


class NoCode(ChainError):
    """A view answered nothing: no contract lives at the address (a deployment JSON for another chain
    or another devnet)."""

    def __init__(self, contract: str, address: str, function: str) -> None:
        super().__init__(
            f"no {contract} contract at {address} ({function} returned no data): the deployment JSON is "
            "not for this chain; pass the right --deployment/--devnet, or the RPC URL it was deployed on"
        )
        self.contract, self.address, self.function = contract, address, function


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]  # canonical ABI types, tuples expanded: what w3.codec takes
    outputs: tuple[str, ...]


def plain(value: object) -> object:
    """Decoded ABI values with checksummed addresses, recursively through tuples and lists."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, (tuple, list)):
        return type(value)(plain(v) for v in value)
    return value


class Contract:
    """A web3 contract object plus each function's ABI resolved once: web3 re-resolves a function
    by name on every call, which costs more than the eth_call itself. The protocol has no overloads."""

    def __init__(self, name: str, address: str, abi: ABI, rpc: Rpc, decoder: ErrorDecoder) -> None:
        self.name = name
        self.rpc = rpc
        self.decoder = decoder
        self.abi = list(abi)
        self.address = to_checksum_address(address)
        self.functions = {
            e["name"]: Function(
                e["name"],
                function_abi_to_4byte_selector(e),
                tuple(get_abi_input_types(e)),
                tuple(get_abi_output_types(e)),
            )
            for e in filter_abi_by_type("function", abi)
        }

    @cached_property
    def web3(self) -> Web3Contract:
        """The web3 contract object (built on first use: it costs more than a connect otherwise does)."""
        return self.rpc.w3.eth.contract(address=self.address, abi=self.abi)

    @cached_property
    def events(self) -> dict[str, ContractEvent]:
        # web3 annotates ContractEvents.__iter__ as returning an Iterable (it is a generator), so
        # the iteration is spelled out for mypy: the same events in the same order.
        return {ev.event_name: ev() for ev in self.web3.events.__iter__()}

    @cached_property
    def _by_topic(self) -> dict[bytes, ContractEvent]:
        return {bytes.fromhex(ev.topic[2:]): ev for ev in self.events.values()}

    def function(self, name: str) -> Function:
        if name not in self.functions:
            raise AbiMismatch("function", name, self.name)
        return self.functions[name]

    def encode(self, name: str, *args: object) -> bytes:
        fn = self.function(name)
        return fn.selector + self.rpc.w3.codec.encode(fn.inputs, args)

    def call(self, name: str, *args: object, block: str | int = "latest", sender: str | None = None) -> tuple[Any, ...]:
        """eth_call; returns the decoded output tuple. A revert raises ContractError."""
        tx = {"to": self.address, "data": "0x" + self.encode(name, *args).hex()}
        if sender is not None:
            tx["from"] = sender
        try:  # the raw eth_call: views are the hot path, and web3's request formatters double their cost
            raw = self.rpc.call("eth_call", tx, hex(block) if isinstance(block, int) else block)
        except RpcError as err:
            raise self.decoder.revert(err) from None
        outputs = self.function(name).outputs
        if outputs and raw in ("0x", ""):  # a function with outputs always returns data: no code there
            raise NoCode(self.name, self.address, name)
        values = self.rpc.w3.codec.decode(outputs, bytes.fromhex(raw[2:]))
        return tuple(plain(v) for v in values)  # plain(values), kept a tuple for the type checker

    def send(self, signer: Signer, name: str, *args: object, gas: int | None = None) -> PendingTx:
        return signer.send(self.address, self.encode(name, *args), gas=gas)

    def transact(self, signer: Signer, name: str, *args: object, gas: int | None = None) -> Receipt:
        return signer.wait(self.send(signer, name, *args, gas=gas))

    def decode_logs(self, logs: Iterable[LogReceipt]) -> list[EventData]:
        """web3's decoding of this contract's logs (others' logs and unknown topics are skipped)."""
        mine = [
            (self._by_topic.get(bytes(log["topics"][0])), log)
            for log in logs
            if log["address"] == self.address and log["topics"]
        ]
        return [ev.process_log(log) for ev, log in mine if ev is not None]

    def get_logs(
        self, from_block: int, to_block: int | str = "latest", events: Sequence[str] = (), max_range: int = 10_000
    ) -> list[LogReceipt]:
        """Logs of this contract in [from_block, to_block] (optionally only the named events),
        fetched ``max_range`` blocks per request: public RPCs cap the range of eth_getLogs."""
        for e in events:
            if e not in self.events:
                raise AbiMismatch("event", e, self.name)
        last = self.rpc.block_number() if to_block == "latest" else int(to_block)
        topics = [[self.events[e].topic for e in events]] if events else []
        logs: list[LogReceipt] = []
        for start in range(from_block, last + 1, max_range):
            logs += self.rpc.w3.eth.get_logs(
                {
                    "address": self.address,
                    "fromBlock": start,
                    "toBlock": min(last, start + max_range - 1),
                    "topics": topics,
                }
            )
        return logs
