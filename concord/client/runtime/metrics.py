"""A node's Prometheus metrics on an optional --metrics-port (PyPI prometheus-client).

    add_metrics_args(parser)            --metrics-port PORT [--metrics-host ADDR] (run commands)
    serve_metrics(args, role)           start the endpoint when asked (NodeConfigError when the port is taken)
    NodeMetrics(role).attach()          feed it from what the node already reports; .serve(host, port)

The node loops know nothing of metrics: they are fed from four places the nodes already report to,
so a cheat hook or a fault drill is counted the same way as the honest path:
  * the node's structured log events (client.runtime.display.fields(event=...)): prepared,
    submitted, missed, accepted, rejected (with the failed check), committed, revealed, finalized...;
  * its Display updates (client.runtime.display.add_update_listener): the round and phase it is at;
  * the chain events of its task (client.runtime.events.add_tick_listener): rounds settled or void,
    what this node was paid (trainer rewards, validator fees and bounties) and slashed, the head block;
  * its wall-time spans (client.timing.add_listener): seconds per category (chain, ipfs, generation,
    proofs, training, verification, replay, aggregation), the categories `concord bench round` splits.

Amounts (concord_paid_tokens_total{kind}, concord_slashed_tokens_total) are whole tokens: the node sums the
chain's integers exactly (Python ints, base units) and each scrape divides the exact sum by 10^decimals,
so a counter never accumulates float error (a float of base units is inexact above 2^53, i.e. from about
0.009 tokens of an 18-decimal token on).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from concord.client import chain, timing
from concord.client.chain import Phase
from concord.client.runtime import display, events
from concord.client.runtime.config import NodeConfigError
from concord.client.runtime.parsers import METRICS_HOST
from concord.client.runtime.parsers import add_metrics_args as add_metrics_args  # re-exported: nodes import it here
from concord.client.units import current_token

log = logging.getLogger(__name__)

DEFAULT_HOST = METRICS_HOST
PREFIX = "concord"
# Log events worth a counter of their own (everything else with an `event` field lands in events_total too).
VERDICT_EVENTS = ("accepted", "rejected")


class NodeMetrics:
    """The metrics of one node process; a registry of its own (nothing global, several per test process)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.address: str | None = None  # learnt from the node's start event
        r = self.registry = CollectorRegistry()
        self.info = Gauge(f"{PREFIX}_node_info", "this node (value 1)", ["role"], registry=r)
        self.info.labels(role).set(1)
        self.round = Gauge(f"{PREFIX}_round", "the round the node is working on", registry=r)
        self.phase = Gauge(
            f"{PREFIX}_phase",
            "1 for the phase of that round (pending .. void), 0 for the others",
            ["phase"],
            registry=r,
        )
        for p in Phase:
            self.phase.labels(p.name.lower()).set(0)
        self.head = Gauge(f"{PREFIX}_head_block", "the last block the node has seen", registry=r)
        self.events = Counter(f"{PREFIX}_events", "the node's log events, by event", ["event"], registry=r)
        self.verdicts = Counter(
            f"{PREFIX}_verdicts",
            "verdicts this validator reached, by verdict and failed check",
            ["verdict", "check"],
            registry=r,
        )
        self.submitted = Counter(f"{PREFIX}_submissions", "rounds this trainer submitted", registry=r)
        self.mean_reward = Gauge(
            f"{PREFIX}_mean_reward", "mean reward of the trainer's last prepared bundle", registry=r
        )
        self.rounds = Counter(
            f"{PREFIX}_rounds_settled", "rounds of the task settled, by outcome", ["outcome"], registry=r
        )
        self.paid_units: dict[str, int] = {"reward": 0, "fee": 0, "bounty": 0}  # exact sums, base units
        self.slashed_units = 0
        r.register(_TokenCounters(self))
        self.seconds = Counter(
            f"{PREFIX}_time_seconds", "wall time per category (client.timing spans)", ["category"], registry=r
        )
        for category in timing.CATEGORIES:
            self.seconds.labels(category)
        self._server: Any = None

    # -- feeding

    def attach(self) -> NodeMetrics:
        """Listen to the node's logs, Display, chain ticks and timing spans (for the life of the process)."""
        logging.getLogger().addHandler(_LogFeed(self))
        display.add_update_listener(self.on_update)
        events.add_tick_listener(self.on_tick)
        timing.add_listener(self.on_span)
        return self

    def on_log(self, fields: Mapping[str, Any]) -> None:
        event = fields.get("event")
        if not isinstance(event, str) or fields.get("status"):
            return
        self.events.labels(event).inc()
        if event in ("started", "start"):
            address = fields.get("address") or fields.get("validator")
            self.address = str(address) if address else self.address
        elif event in VERDICT_EVENTS:
            self.verdicts.labels(event, str(fields.get("check", "")) if event == "rejected" else "").inc()
        elif event == "submitted":
            self.submitted.inc()
        elif event == "prepared" and isinstance(fields.get("mean_reward"), (int, float)):
            self.mean_reward.set(float(fields["mean_reward"]))

    def on_update(self, _title: str, changed: Mapping[str, Any]) -> None:
        if isinstance(changed.get("round"), int):
            self.round.set(changed["round"])
        phase = changed.get("phase")
        if isinstance(phase, str) and phase.upper() in Phase.__members__:
            for p in Phase:
                self.phase.labels(p.name.lower()).set(1 if p.name == phase.upper() else 0)

    def on_tick(self, tick: events.Tick) -> None:
        self.head.set(tick.block)
        me = (self.address or "").lower()
        for e in tick.events:
            if isinstance(e, chain.RoundFinalized):
                self.rounds.labels("void" if e.is_void else "finalized").inc()
            elif isinstance(e, chain.SubmissionRewarded) and e.trainer.lower() == me:
                self.paid_units["reward"] += e.reward
            elif isinstance(e, chain.SubmissionRejected) and e.trainer.lower() == me:
                self.slashed_units += e.slashed
            elif isinstance(e, chain.ValidatorPaid) and e.validator.lower() == me:
                self.paid_units["fee"] += e.fee
            elif isinstance(e, chain.BountyPaid) and e.validator.lower() == me:
                self.paid_units["bounty"] += e.amount
            elif isinstance(e, chain.ValidatorSlashed) and e.validator.lower() == me:
                self.slashed_units += e.amount

    def on_span(self, category: str, seconds: float) -> None:
        self.seconds.labels(category).inc(max(0.0, seconds))

    # -- serving

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port in a daemon thread; returns the port (0 picks a free one).
        NodeConfigError naming --metrics-port when it cannot bind."""
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise NodeConfigError("--metrics-port", f"cannot serve on {host}:{port}: {e.strerror or e}") from None
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound, extra=display.fields(event="metrics", port=bound))
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def tokens(units: int, decimals: int) -> float:
    """Base units as whole tokens: the float nearest the exact quotient (Fraction), not a float sum."""
    return float(Fraction(units, 10**decimals))


class _TokenCounters(Collector):
    """The payment counters in whole tokens, from the exact integer sums at each scrape."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        decimals = current_token().decimals
        paid = CounterMetricFamily(
            f"{PREFIX}_paid_tokens", "what the chain credited this node, by kind (whole tokens)", labels=["kind"]
        )
        for kind, units in self.metrics.paid_units.items():
            paid.add_metric([kind], tokens(units, decimals))
        yield paid
        yield CounterMetricFamily(
            f"{PREFIX}_slashed_tokens",
            "what the chain slashed from this node (whole tokens)",
            value=tokens(self.metrics.slashed_units, decimals),
        )


class _LogFeed(logging.Handler):
    """Every log record with structured fields (display.fields) goes to the metrics."""

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__(level=logging.DEBUG)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            self.metrics.on_log(fields)


# ----------------------------------------------------------------------------- CLI


def serve_metrics(args: argparse.Namespace, role: str) -> NodeMetrics | None:
    """The node's metrics, attached and served, when --metrics-port was given; else None."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        return None
    metrics = NodeMetrics(role)
    metrics.serve(getattr(args, "metrics_host", DEFAULT_HOST), port)
    return metrics.attach()
