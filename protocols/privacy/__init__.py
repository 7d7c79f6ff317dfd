"""Privacy mode: what crosses to the remote is pseudonymized locally and restored locally.

* ``config``: the detector's configuration (entities, custom recognizers) from a TOML file;
* ``detector``: one Presidio ``AnalyzerEngine`` per process (pattern recognizers, and a spaCy
  pipeline for names, places and organizations when one is installed);
* ``pseudonymizer``: one per task: consistent, reversible placeholders (``<PERSON_1>``) and
  ``restore``;
* ``engine``: ``PrivateEngine``, the wrapper around the remote engine that applies both.

Importing this package does not import Presidio or spaCy (seconds); ``detector`` does.
"""
