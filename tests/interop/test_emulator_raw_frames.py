"""What the emulator writes, byte by byte (protocol.md §1.7, §12.2, §12.3).

pyamqp's frame decoder assumes every performative is `00 53 <code>` followed by a list8 or
list32, never list0, and SASL mechanisms must be offered as an array of symbols that
includes MSSBCBS (the only mechanism Python 7.8.2 offers) and ANONYMOUS.
"""
import struct

from test_emulator_idle_connection import FALSE, NULL, TRUE, frame, lst, open_connection, perf, read_until, \
    string, uint


def frames(data):
    """(type, body) of every frame in data, protocol headers skipped."""
    out, i = [], 0
    while i + 8 <= len(data):
        if data[i:i + 4] == b"AMQP":
            i += 8
            continue
        size, doff, kind = struct.unpack(">IBB", data[i:i + 6])
        out.append((kind, data[i + doff * 4:i + size]))
        i += size
    return out


def test_sasl_offer_and_performative_encoding(emulator):
    sk = open_connection(emulator)
    try:
        sk.sendall(frame(perf(0x11, NULL, uint(0), uint(5000), uint(5000))))  # begin
        target = b"\x00\x53\x29" + lst(string("$cbs"))
        source = b"\x00\x53\x28" + lst(string("raw"))
        sk.sendall(frame(perf(0x12, string("raw-cbs"), uint(0), FALSE, NULL, NULL, source, target)))
        sk.sendall(frame(perf(0x16, uint(0), TRUE)))     # detach
        sk.sendall(frame(perf(0x17)))                    # end
        sk.sendall(frame(perf(0x18)))                    # close
        data = read_until(sk, b"\x00\x53\x18", timeout=5)
    finally:
        sk.close()
    got = frames(data)
    sasl = [b for k, b in got if k == 1]
    mechs = [b for b in sasl if b[:3] == b"\x00\x53\x40"]
    assert mechs, sasl
    assert mechs[0][3] in (0xc0, 0xd0)
    arr = mechs[0][4:]
    assert b"\xe0" in arr[:8] or b"\xf0" in arr[:8]  # an array ...
    assert b"MSSBCBS" in arr and b"ANONYMOUS" in arr  # ... of these symbols
    assert any(b[:3] == b"\x00\x53\x44" for b in sasl)  # outcome
    codes = []
    for kind, body in got:
        if kind != 0 or not body:
            continue  # SASL, or an empty (heartbeat) frame
        assert body[:2] == b"\x00\x53", body[:8]
        assert body[3] in (0xc0, 0xd0), body[:8]  # list8 or list32, never list0
        codes.append(body[2])
    assert [c for c in codes if c in (0x10, 0x11, 0x12, 0x16, 0x17, 0x18)] == [0x10, 0x11, 0x12, 0x16, 0x17, 0x18]
