"""The audit log: who did what, on what, from where, when, and how it ended.

One append-only row (`AuditEvent`) per action, written by the service layer where every
interface passes (docs/guide/audit.md). The API every app above uses:

- `audit.recording.audited(verb)`: a decorator around a service; the event is written in
  the same transaction as the change when it succeeds, after the roll-back when it is
  refused (`refused` + the error's stable code) or fails (`failed`).
- `audit.recording.record(verb, by=..., on=...)`: one event, for what is not one service
  call (logins, the admin's edits, an operation that failed in its task).
- `audit.context.system(name)`: the acting system (a schedule, a task) for what runs
  inside it; requests get theirs from `audit.context.AuditContext` (the middleware).

The app sits right above `ttportal` in the layer order: it imports nothing of the apps
that record, so each of them may use it.
"""
