"""audio-studio command line: a thin HTTP client of the audio-studio server.

It needs only httpx and rich, never torch or the server's modules, so it installs anywhere in seconds.
"""
