"""``corral top``: the whole cluster on one screen, live (see docs/TOP.md).

``node_sampler`` (node side, stdlib) -> ``collect`` (kept agent sessions, parallel, timeouts)
-> ``model``/``judge`` (pure: rates, words, stragglers) -> ``render`` (rich) / ``screen`` (loop).
"""
