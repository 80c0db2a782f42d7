"""The tiered privacy policy, in four modules that import only downward.

- :mod:`hub.policy.model`: the data (rules, layers, contexts, obligations,
  decisions, reason codes); no I/O.
- :mod:`hub.policy.engine`: :class:`~hub.policy.engine.Policy` composes layers
  and decides; pure, imports neither YAML nor the reader.
- :mod:`hub.policy.reader`: policy files (YAML) into the model, with
  ``file:line: field: message`` errors; ``load_policy`` reads and composes.
- :mod:`hub.policy.scenarios`: scenario tables (expected decisions) read
  with the reader and run against the engine.
"""
