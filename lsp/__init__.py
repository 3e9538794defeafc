"""diffgemma.lsp: the language server (`diffgemma lsp`), torch-free.

server           create_server: registers every handler; the lifecycle handlers
language_server  DiffgemmaServer: the one object holding state (settings, daemon link, in-flight work)
completion       inline completion, the completion fallback, the diffgemma/context request
rewrite_action   the "Rewrite selection" code action, its command and job
documents        snapshots, positions, the sync notifications
status           diffgemma/status, work-done progress, daemon start-up events
daemon_calls     one counted, timed request to the daemon
infill, rewrite, settings, params, positions: pure pieces the handlers call
"""
