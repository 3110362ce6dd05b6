"""A TCP proxy a test controls: ``cut()`` drops every connection and refuses new ones until
``restore()``. Put it between a service and the broker to take the broker away from that service
alone, leaving the machine's shared broker running."""
import socket

import eventlet
from eventlet.green import socket as green_socket


class TcpProxy:
    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self._listener = eventlet.listen(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = True
        self._connections = set()
        self._server = eventlet.spawn(self._serve)

    def _serve(self):
        while True:
            client, _ = self._listener.accept()
            if not self._up:
                client.close()
                continue
            try:
                upstream = green_socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            self._connections.add(pair)
            eventlet.spawn(self._pipe, client, upstream, pair)
            eventlet.spawn(self._pipe, upstream, client, pair)

    def _pipe(self, source, sink, pair):
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                sink.sendall(chunk)
        except (OSError, EOFError):  # eventlet raises EOFError when the other side closed it
            pass
        finally:
            self._close(pair)

    def _close(self, pair):
        if pair in self._connections:
            self._connections.discard(pair)
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def cut(self):
        """Drop every open connection and refuse new ones."""
        self._up = False
        for pair in list(self._connections):
            self._close(pair)

    def drop_connections(self):
        """Drop every open connection; new ones are accepted."""
        for pair in list(self._connections):
            self._close(pair)

    def restore(self):
        self._up = True

    def close(self):
        self.cut()
        self._server.kill()
        self._listener.close()
