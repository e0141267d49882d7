"""Asterisk's protocols: each codec (bytes in, values out; no asyncio) beside its asyncio server or client."""
