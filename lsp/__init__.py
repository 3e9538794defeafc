"""diffgemma.lsp: the language server (`diffgemma lsp`), torch-free.

server           create_server: registers every handler; the lifecycle handlers
language_server  DiffgemmaServer: the one object holding state (settings, daemon link, in-flight work)
completion       inline completion, the completion fallback, the diffgemma/context request
rewrite_action   the "Rewrite selection" code action, its command and job
next_edit_action diffgemma/nextEdit (the edit that follows the recent ones), diffgemma/ghostText,
                 diffgemma/recentEdits
documents        snapshots, positions, the sync notifications
edit_tracking    the sync notifications feeding the recent-edit history (edit_history)
ghost_state      whether ghost text is showing in a document (next-edit waits for it to go)
status           diffgemma/status, work-done progress, daemon start-up events
daemon_calls     one counted, timed request to the daemon
infill, rewrite, next_edit, edit_history, settings, params, positions: pure pieces the handlers call
"""
