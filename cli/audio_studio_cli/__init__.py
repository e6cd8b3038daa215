"""audio-studio command line, built on the client package (audio_studio).

It needs only httpx and rich, never torch or the server's modules, so it installs anywhere in seconds.
"""
