"""HTTP routers, one per resource: parse, call a service, shape the answer.

Every router carries the admin-token dependency itself, so no `/api` route can
be mounted without it.
"""
