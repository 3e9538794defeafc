"""The vLLM engine: the daemon's canvases run as requests to vLLM servers that serve DiffusionGemma.

Torch-free: the daemon in front of vLLM needs only the checkpoint's tokenizer (`tokens`). A canvas
is one read-only ``/v1/completions`` request (`wire`) sent to the server a client is routed to
(`servers`); candidates run concurrently and are chosen on the held text's log-probabilities
(`canvases`); fills, several holes and rewrites are laid out as seed canvases with pinned
positions (`fill`, `holes`, `rewrite`); `engine.VllmEngine` puts them behind the daemon's engine
interface and `connect` checks at start that the servers run the checkpoint named here.
"""
