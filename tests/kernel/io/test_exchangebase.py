"""ExchangeBase: the framing it reads from a validated head, and the state it starts with."""

from __future__ import annotations

from kernel.io.exchangebase import _framing


def test_framing_of_a_validated_head() -> None:
    assert _framing([(b"host", b"a")]) == (None, False)
    assert _framing([(b"content-length", b"12")]) == (12, False)
    assert _framing([(b"content-length", b"0")]) == (0, False)
    assert _framing([(b"transfer-encoding", b"chunked")]) == (None, True)
