"""AMQP over WebSocket: Microsoft's SDK through wss, and the plain ws upgrade by hand."""
import base64
import os
import socket
import struct

from azure.servicebus import ServiceBusMessage
from azure.servicebus.aio import ServiceBusClient


async def test_python_sdk_over_secure_websocket(emulator, queue):
    # custom_endpoint_address switches uamqp to AMQP over WebSocket over TLS on that address
    client = ServiceBusClient.from_connection_string(emulator.conn_str, connection_verify=emulator.ca,
                                                     custom_endpoint_address="sb://" + emulator.wss)
    body = os.urandom(150000)
    async with client:
        async with client.get_queue_sender(queue) as s:
            await s.send_messages([ServiceBusMessage("w1"), ServiceBusMessage(body)])
        async with client.get_queue_receiver(queue) as r:
            got = []
            while len(got) < 2:
                msgs = await r.receive_messages(max_message_count=2, max_wait_time=5)
                assert msgs
                for m in msgs:
                    got.append(b"".join(m.body))
                    await r.complete_message(m)
    assert got == [b"w1", body]


def ws_frame(payload, opcode=2):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_plain_websocket_upgrade_and_amqp_header(emulator):
    host, port = emulator.ws.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /$servicebus/websocket/ HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n"
               % (emulator.ws, key)).encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += s.recv(4096)
    head, rest = resp.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"AMQPWSB10" in head
    s.sendall(ws_frame(b"AMQP\x03\x01\x00\x00"))
    data = rest
    while len(data) < 10:
        data += s.recv(4096)
    assert data[0] == 0x82  # unmasked binary frame from the server
    n = data[1] & 0x7F
    payload = data[2:2 + n] if n < 126 else data[4:4 + struct.unpack(">H", data[2:4])[0]]
    assert payload.startswith(b"AMQP\x03\x01\x00\x00")
    s.close()


def test_websocket_wrong_path_is_refused(emulator):
    host, port = emulator.ws.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Protocol: AMQPWSB10\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 404")
    s.close()
