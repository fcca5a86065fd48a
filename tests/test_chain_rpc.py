"""What the SDK keeps on top of web3, against a real Anvil: the signer's nonces under concurrency
and across processes, a nonce conflict and its recovery, the same signed bytes re-sent when a reply
is lost (never a second transaction), bounded retries with a one-line error on a dead endpoint,
recovery when the node comes up, RPC errors as RpcError, and a ws:// URL working like http://."""

from __future__ import annotations

import http.server
import logging
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from concord.client import timing
from concord.client.chain import keys
from concord.client.chain.rpc import BroadcastUnknown, NonceConflict, RetryPolicy, Rpc, RpcError, RpcUnavailable, Signer
from concord.client.runtime import procs
from scripts import REPO_ROOT, devnet

RECIPIENT = "0x000000000000000000000000000000000000bEEF"


def _balance(rpc: Rpc, address: str) -> int:
    return int(rpc.call("eth_getBalance", address, "latest"), 16)


def test_concurrent_sends_from_one_signer_use_consecutive_nonces(fresh_anvil) -> None:
    rpc = Rpc(fresh_anvil.url)
    signer = Signer(rpc, keys.devnet_account(3))
    start_nonce = int(rpc.call("eth_getTransactionCount", signer.address, "latest"), 16)
    results = []

    def send(k: int) -> None:
        for _ in range(5):
            results.append(signer.send(RECIPIENT, b"", value=1 + k))

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    receipts = signer.wait_all(results)
    assert sorted(p.nonce for p in results) == list(range(start_nonce, start_nonce + 20))
    assert all(r.status == 1 for r in receipts)
    assert _balance(rpc, RECIPIENT) == sum(p.value for p in results)


def test_dead_endpoint_is_retried_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    port = procs.free_port()
    rpc = Rpc(f"http://127.0.0.1:{port}", timeout=1, retry=RetryPolicy(attempts=3, base_delay=0.01))
    with caplog.at_level(logging.WARNING, logger="concord.client.chain.rpc"):
        with pytest.raises(RpcUnavailable) as exc:
            rpc.chain_id()
    assert exc.value.attempts == 3 and exc.value.method == "eth_chainId"
    assert str(exc.value) == f"eth_chainId to http://127.0.0.1:{port} failed 3 times: Connection refused"
    assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2


def test_rpc_recovers_when_the_node_comes_up_during_retries(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = procs.free_port()
    rpc = Rpc(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=40, base_delay=0.05, max_delay=0.2))
    started: list[procs.Daemon] = []
    starter = threading.Timer(0.3, lambda: started.append(devnet.start_anvil(port, tmp_path / "anvil.log")))
    starter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="concord.client.chain.rpc"):
            assert rpc.chain_id() == 31337
        assert any("retry" in r.getMessage() for r in caplog.records)
    finally:
        starter.join()
        for d in started:
            procs.stop(d)


class _LossyProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Forwards JSON-RPC to anvil but drops the replies to the first ``drop``
    eth_sendRawTransaction calls (the node got the transaction; the client never hears back)."""

    daemon_threads = True

    def __init__(self, upstream: str, drop: int = 1) -> None:
        self.upstream = upstream
        self.drop = drop
        self.dropped = 0
        self.raw_sends = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # http.server names it
        server: _LossyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        upstream = requests.post(server.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=10)
        if b"eth_sendRawTransaction" in body:
            server.raw_sends += 1
            if server.dropped < server.drop:
                server.dropped += 1
                self.close_connection = True
                self.connection.shutdown(2)  # reply lost after the node accepted the tx
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)


@pytest.fixture
def lossy_proxy(fresh_anvil) -> Iterator[_LossyProxy]:
    proxy = _LossyProxy(fresh_anvil.url)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_lost_reply_is_rebroadcast_as_the_same_transaction_not_a_second_one(fresh_anvil, lossy_proxy) -> None:
    direct = Rpc(fresh_anvil.url)
    rpc = Rpc(f"http://127.0.0.1:{lossy_proxy.server_address[1]}", retry=RetryPolicy(attempts=4, base_delay=0.01))
    signer = Signer(rpc, keys.devnet_account(4))
    before = _balance(direct, RECIPIENT)
    nonce_before = int(direct.call("eth_getTransactionCount", signer.address, "latest"), 16)

    first = signer.send(RECIPIENT, b"", value=12345)
    signer.wait(first)
    second = signer.send(RECIPIENT, b"", value=1)
    signer.wait(second)

    assert lossy_proxy.dropped == 1 and lossy_proxy.raw_sends == 3  # one re-broadcast of identical bytes
    assert (first.nonce, second.nonce) == (nonce_before, nonce_before + 1)
    assert _balance(direct, RECIPIENT) - before == 12345 + 1  # paid once, not twice
    assert int(direct.call("eth_getTransactionCount", signer.address, "latest"), 16) == nonce_before + 2


_NODE_PROCESS = """
import sys
from concord.client.chain import keys
from concord.client.chain.rpc import Rpc, Signer
signer = Signer(Rpc(sys.argv[1]), keys.devnet_account(int(sys.argv[2])))
pending = [signer.send(sys.argv[3], b"", value=int(sys.argv[2])) for _ in range(8)]
signer.wait_all(pending)
print(",".join(str(p.nonce) for p in pending))
"""


def test_several_node_processes_send_at_once_each_with_its_own_signer(fresh_anvil) -> None:
    import subprocess
    import sys

    rpc = Rpc(fresh_anvil.url)
    recipient = "0x000000000000000000000000000000000000c0DE"
    procs_ = [
        subprocess.Popen(
            [sys.executable, "-c", _NODE_PROCESS, fresh_anvil.url, str(i), recipient],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for i in (5, 6, 7)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs_]
    assert [p.returncode for p in procs_] == [0, 0, 0]
    assert outs == [",".join(str(n) for n in range(8))] * 3  # each key's nonces 0..7, no gaps, no reuse
    assert _balance(rpc, recipient) == 8 * (5 + 6 + 7)


def test_unconfirmed_broadcast_names_the_transaction_and_its_nonce_is_never_reused(fresh_anvil) -> None:
    proxy = _LossyProxy(fresh_anvil.url, drop=2)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        direct = Rpc(fresh_anvil.url)
        rpc = Rpc(f"http://127.0.0.1:{proxy.server_address[1]}", retry=RetryPolicy(attempts=2, base_delay=0.01))
        signer = Signer(rpc, keys.devnet_account(5))
        before = _balance(direct, RECIPIENT)
        with pytest.raises(BroadcastUnknown) as exc:
            signer.send(RECIPIENT, b"", value=777)
        lost = exc.value.pending
        assert signer.wait(lost).status == 1  # it had landed after all
        after = signer.send(RECIPIENT, b"", value=1)
        signer.wait(after)
        assert after.nonce == lost.nonce + 1  # nonce re-read, not reused
        assert _balance(direct, RECIPIENT) - before == 777 + 1
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_a_second_sender_with_the_same_key_gets_a_nonce_conflict_then_recovers(fresh_anvil) -> None:
    rpc = Rpc(fresh_anvil.url)
    mine, other = Signer(rpc, keys.devnet_account(6)), Signer(rpc, keys.devnet_account(6))
    mine.wait(mine.send(RECIPIENT, b"", value=1))  # mine holds nonce 1 next
    other.wait(other.send(RECIPIENT, b"", value=2))  # other reads nonce 1 and spends it
    with pytest.raises(NonceConflict) as exc:
        mine.send(RECIPIENT, b"", value=3)
    assert (exc.value.address, exc.value.nonce) == (mine.address, 1)
    assert mine.wait(mine.send(RECIPIENT, b"", value=4)).status == 1  # nonce re-read: 2
    assert _balance(rpc, RECIPIENT) == 1 + 2 + 4


def test_node_errors_are_rpc_errors_raised_by_call_and_returned_by_batch(fresh_anvil) -> None:
    rpc = Rpc(fresh_anvil.url)
    with pytest.raises(RpcError) as exc:
        rpc.call("eth_getBalance", "not an address", "latest")
    assert exc.value.method == "eth_getBalance" and exc.value.code != 0
    ok, bad = rpc.batch([("eth_chainId", []), ("eth_getBalance", ["not an address", "latest"])])
    assert ok == "0x7a69" and isinstance(bad, RpcError)


def test_a_websocket_url_sends_and_reads_like_http(fresh_anvil) -> None:
    ws = Rpc(fresh_anvil.url.replace("http://", "ws://"))
    signer = Signer(ws, keys.devnet_account(7))
    assert ws.chain_id() == 31337
    receipt = signer.wait(signer.send(RECIPIENT, b"", value=99))
    assert receipt.status == 1 and ws.block_number() == receipt.block_number
    assert _balance(Rpc(fresh_anvil.url), RECIPIENT) == 99


def test_every_rpc_request_is_timed_as_a_chain_span(
    fresh_anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = timing._Recorder(str(tmp_path / "spans.jsonl"))
    monkeypatch.setattr(timing, "_recorder", recorder)
    monkeypatch.setattr(timing, "_checked", True)
    rpc = Rpc(fresh_anvil.url)
    signer = Signer(rpc, keys.devnet_account(8))
    signer.wait(signer.send(RECIPIENT, b"", value=1))  # chainId, estimate, gasPrice, nonce, raw tx, receipt
    rpc.block_number()
    recorder.flush()
    spans = (tmp_path / "spans.jsonl").read_text().splitlines()
    assert len(spans) >= 7 and all('"cat": "chain"' in line for line in spans)
