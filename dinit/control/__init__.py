"""The control socket and the CLI that talks to it (§12).

The client side (``client``, ``commands``, ``protocol``) imports nothing of the init itself, so
``dinit status`` starts as fast as Python can; the server side (``server``, ``handlers``) runs on
dinit's event loop.
"""
