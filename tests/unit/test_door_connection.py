"""An accepted connection's settings (gateway/door.py prepare_connection), on a real loopback
TCP connection."""
import socket

from gateway.door import prepare_connection


def test_accepted_connections_send_without_nagle_delay_and_time_out():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            prepare_connection(accepted, 7.5)
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert accepted.gettimeout() == 7.5
        finally:
            accepted.close()
            client.close()
