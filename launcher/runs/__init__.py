"""A run, whatever backend runs it: how it was asked for (``options``), its record on disk
(``record``: ``<storage.runs>/<name>/run.json``) and its state from its nodes' (``state``)."""
