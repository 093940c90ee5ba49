"""The housing registry's pure core: CSV rows, their validation, cross-file checks and diffs.

One CSV file per table (docs/registry.md). Everything here takes text or rows
and returns rows, errors or changes: the CLI reads and writes the files,
``adapters/registry_store`` moves rows to and from the database. One module per job:

* ``vocabulary``: the registry's terms (device kinds, grid levels, place types, roles ...);
* ``cells``: how one CSV cell's text becomes a value, and back;
* ``rows``: the row types and the entities (tables) with their columns, in apply order;
* ``checks``: the registry as a whole, and what a row must satisfy against other rows;
* ``csvfiles``: reading a CSV file into rows and errors, and rendering rows as CSV;
* ``plan``: validating an import against the stored registry and diffing it.

A row is a NamedTuple of its CSV columns. The database row ("db row") is the
same tuple followed by the entity's derived columns (the street, carried down
the grid chain), which no file holds. Masking personal data is ``core/privacy``'s.
"""
