"""The OpenAI protocol on top of the native routes: /v1/chat/completions (Music Flamingo), /v1/audio/generate
(AudioLDM2), /v1/models, and OpenAI's error shape for all of /v1 (docs/openai.md)."""
