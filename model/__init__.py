"""The ML side of static-transfer-learning: it knows the store, never HTTP.

Notebooks and scripts start at ``model.api``; the CLI and the Flask handlers import
the rooms below directly. Each room imports only rooms beneath it
(``tests/test_structure.py`` holds it so), from the top: ``api`` · ``run`` (a job to
its end) · ``lifecycle`` (publish, export, verify, gc, catalog) · ``training`` and
``inference`` · ``features`` · ``jobs`` (state in the store) · ``execution`` (local or
Ray) · ``bases`` · ``head`` · ``data`` · ``identity`` (what names a model) ·
``config`` and ``errors``.
"""
