"""Wire adapters so existing editor clients work unchanged (torch-free).

- llama.cpp ``POST /infill`` (llama.vim, llama.vscode) and ``POST /completion`` (Continue's
  llama.cpp provider, llama.cpp's native API): runtime.daemon.llama_compat.
- OpenAI legacy ``POST /v1/completions`` with ``prompt`` + ``suffix``, or a FIM template inside
  ``prompt`` (Continue, Tabby, llama.vscode's OpenAI mode); Mistral-style ``POST
  /v1/fim/completions`` (Continue's FIM providers); OpenAI ``POST /v1/chat/completions`` (the SDK,
  the instruct features of llama.vim/llama.vscode): runtime.daemon.openai_compat.

Each maps a body onto a daemon request (its fields read by runtime.daemon.compat_fields) and the
result back through a Codec (runtime.daemon.codec). They are lenient the way the servers they
imitate are: fields we have no use for (samplers, top_k, n_indent, id_slot, ...) are accepted and
ignored, but a field we do use must have the right type. The client's ``model`` is its own label
for this server, not a checkpoint we could load: the daemon's model answers.
"""

from __future__ import annotations

from diffgemma.runtime.daemon.codec import Codec, apply_stop
from diffgemma.runtime.daemon.llama_compat import (
    LLAMA_COMPLETION,
    LLAMA_INFILL,
    LlamaCall,
    llama_completion_request,
    llama_infill_request,
)
from diffgemma.runtime.daemon.openai_compat import (
    CHAT_COMPLETION,
    COMPLETION,
    FIM_COMPLETION,
    OpenAICall,
    chat_completion_request,
    empty_result,
    fim_completion_request,
    openai_completion_request,
    openai_completion_response,
)

__all__ = [
    "CHAT_COMPLETION",
    "COMPLETION",
    "FIM_COMPLETION",
    "LLAMA_COMPLETION",
    "LLAMA_INFILL",
    "Codec",
    "LlamaCall",
    "OpenAICall",
    "apply_stop",
    "chat_completion_request",
    "empty_result",
    "fim_completion_request",
    "llama_completion_request",
    "llama_infill_request",
    "openai_completion_request",
    "openai_completion_response",
]
