"""--otlp pieces that need no network: the URL rule and captured values as OTLP attributes."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from utrace.errors import UsageError
from utrace.output.otlp import any_value, traces_url
from utrace.probes.decode import Pointer, Rendered, StringValue


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
        ("https://collector.example:443/otlp", "https://collector.example:443/otlp/v1/traces"),
        ("http://[::1]:4318/v1/traces", "http://[::1]:4318/v1/traces"),
    ],
)
def test_traces_url(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "grpc://x:4317", "http://", "http://h:70000"])
def test_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(UsageError):
        traces_url(endpoint)


def roundtrip(kvs: list[KeyValue]) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in kvs:
        kv = KeyValue.FromString(kv.SerializeToString())
        which = kv.value.WhichOneof("value")
        assert which is not None
        out[kv.key] = getattr(kv.value, which)
    return out


def test_values_keep_their_type() -> None:
    s = StringValue("héllo")
    assert roundtrip(any_value("a", s)) == {"a": "héllo"}
    assert roundtrip(any_value("a", True)) == {"a": True}
    assert roundtrip(any_value("a", -5)) == {"a": -5}
    assert roundtrip(any_value("a", Pointer(0x7FFF0000))) == {"a": 0x7FFF0000}
    assert roundtrip(any_value("a", 2**64 - 1)) == {"a": str(2**64 - 1)}  # beyond int64: text, not wrapped
    assert roundtrip(any_value("a", 1.5)) == {"a": 1.5}
    assert roundtrip(any_value("a", Rendered("nil"))) == {"a": "nil"}
    assert any_value("a", None) == []
    assert roundtrip(any_value("r", {"r0": 1, "r1": Rendered("nil")})) == {"r.r0": 1, "r.r1": "nil"}


@pytest.mark.parametrize(
    ("retry_after", "attempt", "delay"),
    [
        (None, 0, 0.25),
        (None, 2, 1.0),
        (None, 10, 5.0),  # doubling is capped
        ("2", 0, 2.0),  # the receiver's seconds win
        (" 3 ", 1, 3.0),
        ("600", 0, 5.0),  # capped too: a trace's end must not wait ten minutes
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1, 0.5),  # an HTTP date is not honoured
        ("-1", 0, 0.25),
    ],
)
def test_retry_delay(retry_after: str | None, attempt: int, delay: float) -> None:
    from utrace.output.otlp import retry_delay

    assert retry_delay(retry_after, attempt) == delay
