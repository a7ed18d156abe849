"""Peers run beside our server in the same run: PouchDB-server now; a Yjs WebSocket server with the live channel."""
