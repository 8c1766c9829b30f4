"""Storage: the backend interface and one package per database dialect.

- ``_base``: the interface (``Backend``, ``Transaction``, ``EventStore``, ``CommitWatcher``)
  and ``_rows``, ``_watch``: what every dialect shares;
- ``sqlite/``, ``postgres/``: the dialects, each with its backend, transaction, workflow
  store, queue, event store, commit watcher, connections and SQL files (``sql/``);
- ``_schemes``: which dialect a database URL names (the only module here naming them),
  ``_dialect``: what a dialect package offers, ``migrate``: migrations by URL;
- ``sql``: the loader of the dialects' named queries and numbered migrations.
"""
