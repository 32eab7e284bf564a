"""The connection idle timers of the service (protocol.md §1.6) on a raw AMQP socket.

No SDK opens a connection without links, so this speaks AMQP by hand: a connection that
attaches nothing within 1 min, and one whose only link is gone for 5 min, are closed with
amqp:connection:forced once POST /clock moves the emulator clock past the limit.
"""
import socket
import struct
import time


def frame(body, channel=0, kind=0):
    return struct.pack(">IBBH", 8 + len(body), 2, kind, channel) + body


def lst(*fields):
    payload = b"".join(fields)
    return b"\xd0" + struct.pack(">II", 4 + len(payload), len(fields)) + payload


def perf(code, *fields):
    return b"\x00\x53" + bytes([code]) + lst(*fields)


def sym(s):
    return b"\xa3" + bytes([len(s)]) + s.encode()


def string(s):
    return b"\xa1" + bytes([len(s)]) + s.encode()


def uint(n):
    return b"\x70" + struct.pack(">I", n)


NULL, TRUE, FALSE = b"\x40", b"\x41", b"\x42"


def open_connection(emulator):
    host, port = emulator.amqp.rsplit(":", 1)
    sk = socket.create_connection((host, int(port)))
    sk.sendall(b"AMQP\x03\x01\x00\x00" + frame(perf(0x41, sym("ANONYMOUS")), kind=1)
               + b"AMQP\x00\x01\x00\x00" + frame(perf(0x10, string("raw-idle-test"))))
    return sk


def read_until(sk, needle, timeout=5.0):
    sk.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got and time.monotonic() < deadline:
        try:
            chunk = sk.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        got += chunk
    return got


def test_connection_without_any_link_is_closed_after_a_minute(emulator):
    sk = open_connection(emulator)
    try:
        assert b"sbus-emulator" in read_until(sk, b"sbus-emulator")  # the open reply
        emulator.advance(59)
        assert read_until(sk, b"amqp:connection:forced", timeout=0.5).find(b"forced") < 0
        emulator.advance(2)
        got = read_until(sk, b"60000 milliseconds")
        assert b"amqp:connection:forced" in got and b"60000 milliseconds" in got
    finally:
        sk.close()


def test_connection_whose_links_are_gone_is_closed_after_five_minutes(emulator):
    sk = open_connection(emulator)
    try:
        sk.sendall(frame(perf(0x11, NULL, uint(0), uint(5000), uint(5000))))  # begin
        target = b"\x00\x53\x29" + lst(string("$cbs"))
        source = b"\x00\x53\x28" + lst(string("raw"))
        sk.sendall(frame(perf(0x12, string("raw-cbs"), uint(0), FALSE, NULL, NULL, source, target)))  # attach
        assert b"raw-cbs" in read_until(sk, b"raw-cbs")
        emulator.advance(240)  # a link is open: the no-link minute does not apply
        sk.sendall(frame(perf(0x16, uint(0), TRUE)))  # detach, closed
        assert b"\x00\x53\x16" in read_until(sk, b"\x00\x53\x16")  # its detach: the link is gone
        emulator.advance(299)
        assert read_until(sk, b"amqp:connection:forced", timeout=0.5).find(b"connection:forced") < 0
        emulator.advance(2)
        got = read_until(sk, b"300000 milliseconds")
        assert b"amqp:connection:forced" in got and b"300000 milliseconds" in got
    finally:
        sk.close()
