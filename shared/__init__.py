"""The function app's domain code, one capability per package (design.md, "Layout").

::

    shared.app               the composition root: builds every collaborator once
        |
      query                  presenters: serve what the pipelines stored (the usage API)
        |
    collection | billing     pipelines: none imports another
        |
     storage                 tables, queues and the app's stored state
        |
      core                   settings, errors, hours, meters, retries

Dependencies point down only; ``lint-imports`` (pyproject.toml) fails the test command on
any import that breaks the layering. The local stack (``devstack/``) is never imported here.
"""
