"""The usage portal: a small static web app over the usage API, for people rather than scripts.

A presenter beside ``shared.query``: it serves files (``static/``) and the sign-in
configuration the browser needs, and nothing else. Every number the portal shows comes from
the browser calling the API itself with the caller's own bearer token, so the portal can
grant nothing the API does not; it never imports the API or the pipelines.
"""
